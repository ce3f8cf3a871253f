"""Property tests of the GESTALT scores (hypothesis) against the paper's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gestalt_al.ranking import VARIANTS, edge_weights, gestalt_scores, gestalt_scores_sharded
from tests import reference

# Small integer-valued latents make exact ties (duplicate and zero latents) common.
ELEMENTS = st.integers(-3, 3).map(float)


@st.composite
def pools(draw: st.DrawFn, min_n: int = 1) -> np.ndarray:
    n = draw(st.integers(min_n, 12))
    k = draw(st.integers(2, 5))
    d = draw(st.integers(1, 4))
    return draw(arrays(np.float64, (n, k, d), elements=ELEMENTS))


@st.composite
def pool_and_train(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    pool = draw(pools())
    m = draw(st.integers(2, 8))
    train = draw(arrays(np.float64, (m, *pool.shape[1:]), elements=ELEMENTS))
    return pool, train


def _prior_is_defined(train: np.ndarray) -> bool:
    return bool(
        (np.array([reference.node(reference.graph(s)) for s in train]).std(axis=0) > 1e-9).all()
    )


@given(pools(), st.sampled_from(["node", "edge"]))
def test_matches_naive_reference(pool: np.ndarray, variant: str) -> None:
    np.testing.assert_allclose(gestalt_scores(pool, variant), reference.scores(pool, variant))


@given(pool_and_train())
def test_weighted_node_matches_naive_reference(data: tuple[np.ndarray, np.ndarray]) -> None:
    pool, train = data
    assume(_prior_is_defined(train))
    np.testing.assert_allclose(
        gestalt_scores(pool, "weighted_node", train),
        reference.scores(pool, "weighted_node", train),
    )


@given(pool_and_train(), st.sampled_from(VARIANTS), st.data())
def test_permuting_the_pool_permutes_the_scores(
    data: tuple[np.ndarray, np.ndarray], variant: str, draw: st.DataObject
) -> None:
    pool, train = data
    assume(variant != "weighted_node" or _prior_is_defined(train))
    perm = np.array(draw.draw(st.permutations(range(len(pool)))))
    np.testing.assert_array_equal(
        gestalt_scores(pool[perm], variant, train), gestalt_scores(pool, variant, train)[perm]
    )


@given(pools(), st.sampled_from(["node", "edge"]), st.integers(-1000, 1000), st.data())
def test_scaling_a_latent_changes_nothing(
    pool: np.ndarray, variant: str, exponent: int, data: st.DataObject
) -> None:
    # Cosine similarity ignores a latent's length. Powers of two scale exactly in floating
    # point, so the scores must be identical, ties included, from 2^-1000 to 2^1000 (where
    # squared norms would underflow or overflow if computed naively).
    n, k = data.draw(st.integers(0, len(pool) - 1)), data.draw(st.integers(0, pool.shape[1] - 1))
    scaled = pool.copy()
    scaled[n, k] *= 2.0**exponent
    np.testing.assert_array_equal(gestalt_scores(scaled, variant), gestalt_scores(pool, variant))


@given(pools(), st.floats(1e-3, 1e3))
def test_edge_weights_ignore_any_positive_scale(pool: np.ndarray, factor: float) -> None:
    np.testing.assert_allclose(edge_weights(pool * factor), edge_weights(pool), atol=1e-12)


@given(pools(), st.sampled_from(["node", "edge"]))
def test_ranks_sum_like_average_ranks(pool: np.ndarray, variant: str) -> None:
    # Every column's average ranks sum to N(N+1)/2, so the scores do too; each lies in [1, N].
    scores = gestalt_scores(pool, variant)
    n = len(pool)
    assert scores.sum() == pytest.approx(n * (n + 1) / 2)
    assert scores.min() >= 1
    assert scores.max() <= n


@given(pools(), st.integers(1, 5), st.sampled_from(["node", "edge"]))
def test_identical_samples_tie(pool: np.ndarray, copies: int, variant: str) -> None:
    repeated = np.concatenate([pool[:1]] * copies + [pool])
    scores = gestalt_scores(repeated, variant)
    np.testing.assert_array_equal(scores[: copies + 1], scores[0])


@given(pool_and_train(), st.sampled_from(VARIANTS), st.data())
def test_sharded_equals_unsharded(
    data: tuple[np.ndarray, np.ndarray], variant: str, draw: st.DataObject
) -> None:
    pool, train = data
    assume(variant != "weighted_node" or _prior_is_defined(train))
    cuts = sorted(draw.draw(st.lists(st.integers(1, max(1, len(pool) - 1)), max_size=4)))
    shards = [s for s in np.split(pool, [c for c in cuts if c < len(pool)]) if len(s)]
    np.testing.assert_array_equal(
        gestalt_scores_sharded(shards, variant, train), gestalt_scores(pool, variant, train)
    )
