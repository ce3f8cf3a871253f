"""Bad input to the public ranking API: ValueError that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from gestalt_al.ranking import gestalt_scores, gestalt_scores_from_edges, gestalt_scores_sharded

GOOD = np.random.default_rng(0).normal(size=(6, 3, 4))


@pytest.mark.parametrize(
    ("latents", "message"),
    [
        (np.zeros((6, 3)), r"shaped \[N, K, D\]"),
        (np.zeros((0, 3, 4)), "no samples"),
        (np.zeros((6, 1, 4)), "K >= 2"),
        (np.zeros((6, 3, 0)), "D >= 1"),
        (np.array([[["a"]]]), "real numbers"),
    ],
)
def test_bad_shapes_and_types(latents: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gestalt_scores(latents, "node")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_latents_name_the_sample(bad: float) -> None:
    latents = GOOD.copy()
    latents[4, 1, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or inf in 1 sample.*index 4"):
        gestalt_scores(latents, "edge")


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="unknown GESTALT variant 'nodes'"):
        gestalt_scores(GOOD, "nodes")


def test_weighted_node_needs_train_latents() -> None:
    with pytest.raises(ValueError, match="needs the labeled set"):
        gestalt_scores(GOOD, "weighted_node")


def test_train_k_mismatch() -> None:
    with pytest.raises(ValueError, match=r"train_latents has \[K, D\] = \[4, 4\]"):
        gestalt_scores(GOOD, "weighted_node", np.ones((5, 4, 4)))


def test_train_with_no_spread_is_refused_not_nan() -> None:
    one_sample = GOOD[:1]
    with pytest.raises(ValueError, match=r"standard deviation .* M=1 labeled"):
        gestalt_scores(GOOD, "weighted_node", one_sample)
    identical = np.repeat(GOOD[:1], 5, axis=0)
    with pytest.raises(ValueError, match="vary over the labeled set"):
        gestalt_scores(GOOD, "weighted_node", identical)


def test_shards_must_agree() -> None:
    with pytest.raises(ValueError, match=r"latents shard 1 has \[K, D\]"):
        gestalt_scores_sharded([GOOD, np.ones((2, 4, 4))], "node")
    with pytest.raises(ValueError, match="no shards"):
        gestalt_scores_sharded([], "node")


def test_edge_weights_contract() -> None:
    with pytest.raises(ValueError, match="zero diagonal"):
        gestalt_scores_from_edges(np.ones((3, 4, 4)), "node")
    with pytest.raises(ValueError, match=r"\[N, K, K\]"):
        gestalt_scores_from_edges(np.zeros((3, 4, 5)), "node")
