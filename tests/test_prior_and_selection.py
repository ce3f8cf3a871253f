"""The Weighted-Node prior's per-round update, and deterministic top-b selection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gestalt_al.ranking import NodeWeightPrior, select_top

WEIGHTS = st.floats(-13, 13, allow_nan=False)


@given(
    arrays(np.float64, st.tuples(st.integers(1, 20), st.just(4)), elements=WEIGHTS),
    arrays(np.float64, st.tuples(st.integers(1, 20), st.just(4)), elements=WEIGHTS),
)
def test_adding_a_round_equals_recomputing(first: np.ndarray, second: np.ndarray) -> None:
    updated = NodeWeightPrior.from_node_weights(first).update(second)
    both = np.concatenate([first, second])
    assert updated.count == len(both)
    np.testing.assert_allclose(updated.mean, both.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(updated.std, both.std(axis=0), atol=1e-6)


def test_prior_update_rejects_other_k() -> None:
    with pytest.raises(ValueError, match="K=3 classes, the prior has 4"):
        NodeWeightPrior.from_node_weights(np.ones((2, 4))).update(np.ones((2, 3)))


def test_select_top_breaks_ties_by_id() -> None:
    scores = np.array([2.0, 5.0, 5.0, 1.0, 5.0])
    ids = np.array(["e", "d", "b", "a", "c"])
    chosen = select_top(scores, ids, 3)
    assert ids[chosen.indices].tolist() == ["b", "c", "d"]
    np.testing.assert_array_equal(chosen.scores, [5.0, 5.0, 5.0])
    assert ids[select_top(scores, ids, 4).indices].tolist() == ["b", "c", "d", "e"]


@given(st.lists(st.integers(0, 5), min_size=1, max_size=40), st.data())
def test_select_top_is_the_sorted_prefix(raw: list[int], data: st.DataObject) -> None:
    scores = np.array(raw, dtype=float)
    ids = np.array([f"s{i:03d}" for i in range(len(raw))])
    budget = data.draw(st.integers(1, len(raw)))
    expected = sorted(range(len(raw)), key=lambda i: (-scores[i], ids[i]))[:budget]
    assert select_top(scores, ids, budget).indices.tolist() == expected


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (0, "positive integer"),
        (-1, "positive integer"),
        (4, "larger than the pool"),
        (True, "positive"),
    ],
)
def test_select_top_rejects_bad_budgets(budget: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_top(np.zeros(3), np.array(["a", "b", "c"]), budget)


def test_select_top_rejects_duplicate_ids_and_nan() -> None:
    with pytest.raises(ValueError, match="not unique"):
        select_top(np.zeros(3), np.array(["a", "a", "c"]), 1)
    with pytest.raises(ValueError, match="NaN"):
        select_top(np.array([0.0, np.nan]), np.array(["a", "b"]), 1)
