"""Average ranks (radix kernel and sharded merge) against scipy's rankdata."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import rankdata

from gestalt_al.ranking import average_ranks, mean_rank, merge_sorted_columns, sorted_columns

FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(arrays(np.float64, st.tuples(st.integers(1, 60), st.integers(1, 4)), elements=FLOATS))
def test_within_ranks_equal_rankdata(values: np.ndarray) -> None:
    np.testing.assert_array_equal(average_ranks(values), rankdata(values, axis=0))


@given(
    arrays(np.float64, st.tuples(st.integers(2, 60), st.integers(1, 3)), elements=FLOATS),
    st.lists(st.integers(1, 59), max_size=5),
)
def test_sharded_ranks_equal_global_rankdata(values: np.ndarray, cuts: list[int]) -> None:
    shards = [s for s in np.split(values, sorted(c for c in cuts if c < len(values))) if len(s)]
    pool = merge_sorted_columns([sorted_columns(s) for s in shards])
    ranked = np.concatenate([average_ranks(s, pool) for s in shards])
    np.testing.assert_array_equal(ranked, rankdata(values, axis=0))


def test_signed_zeros_and_extremes_tie_and_order() -> None:
    values = np.array([[0.0], [-0.0], [np.finfo(float).max], [-np.finfo(float).max], [5e-324]])
    np.testing.assert_array_equal(average_ranks(values)[:, 0], [2.5, 2.5, 5, 1, 4])


def test_large_column_matches_rankdata_with_many_ties() -> None:
    rng = np.random.default_rng(7)
    values = np.round(rng.normal(size=(200_000, 2)), 3)  # thousands of tie groups
    np.testing.assert_array_equal(average_ranks(values), rankdata(values, axis=0))
    np.testing.assert_allclose(mean_rank(values), rankdata(values, axis=0).mean(axis=1))


def test_merge_rejects_mismatched_columns() -> None:
    with pytest.raises(ValueError, match="number of columns"):
        merge_sorted_columns([np.zeros((2, 3)), np.zeros((3, 3))])
    with pytest.raises(ValueError, match="empty"):
        merge_sorted_columns([])
