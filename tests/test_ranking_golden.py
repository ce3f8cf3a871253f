"""Hand-computed GESTALT scores for tiny graphs (K=3, N=4); derivations in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from gestalt_al.ranking import edge_weights, gestalt_scores, node_weights

# Four pool samples, K=3 classes, D=2. Edges (w12, w13, w23) and node weights (Eq. 2):
#   A: (1,0) (1,0) (1,0)   edges ( 1, 1, 1)  nodes ( 2,  2,  2)
#   B: (1,0) (0,1) (-1,0)  edges ( 0,-1, 0)  nodes (-1,  0, -1)
#   C: (1,0) (0,1) (0,2)   edges ( 0, 0, 1)  nodes ( 0,  1,  1)
#   D: (2,0) (-1,0) (0,0)  edges (-1, 0, 0)  nodes (-1, -1,  0)   (zero latent -> similarity 0)
POOL = np.array(
    [
        [[1, 0], [1, 0], [1, 0]],
        [[1, 0], [0, 1], [-1, 0]],
        [[1, 0], [0, 1], [0, 2]],
        [[2, 0], [-1, 0], [0, 0]],
    ],
    dtype=np.float32,
)
# Labeled set = latents of A and B: node weights (2,2,2) and (-1,0,-1), so the prior is
# mean (0.5, 1, 0.5) and population std (1.5, 1, 1.5).
TRAIN = POOL[[0, 1]]


def test_edge_and_node_weights_by_hand() -> None:
    edges = edge_weights(POOL)
    iu = np.triu_indices(3, k=1)
    np.testing.assert_array_equal(
        edges[:, iu[0], iu[1]], [[1, 1, 1], [0, -1, 0], [0, 0, 1], [-1, 0, 0]]
    )
    np.testing.assert_array_equal(edges, edges.transpose(0, 2, 1))
    np.testing.assert_array_equal(np.diagonal(edges, axis1=1, axis2=2), 0)
    np.testing.assert_array_equal(
        node_weights(edges), [[2, 2, 2], [-1, 0, -1], [0, 1, 1], [-1, -1, 0]]
    )


def test_node_scores_by_hand() -> None:
    # Column ranks (ascending, ties averaged):
    #   node 1: A 2, B -1, C 0, D -1 -> A 4, B 1.5, C 3, D 1.5
    #   node 2: A 2, B 0,  C 1, D -1 -> A 4, B 2,   C 3, D 1
    #   node 3: A 2, B -1, C 1, D 0  -> A 4, B 1,   C 3, D 2
    # Mean rank (Eq. 3): A 4, B 1.5, C 3, D 1.5
    np.testing.assert_allclose(gestalt_scores(POOL, "node"), [4, 1.5, 3, 1.5])


def test_edge_scores_by_hand() -> None:
    #   w12: A 1, B 0,  C 0, D -1 -> A 4, B 2.5, C 2.5, D 1
    #   w13: A 1, B -1, C 0, D 0  -> A 4, B 1,   C 2.5, D 2.5
    #   w23: A 1, B 0,  C 1, D 0  -> A 3.5, B 1.5, C 3.5, D 1.5
    # Mean rank (Eq. 4): A 11.5/3, B 5/3, C 8.5/3, D 5/3
    np.testing.assert_allclose(gestalt_scores(POOL, "edge"), [11.5 / 3, 5 / 3, 8.5 / 3, 5 / 3])


def test_weighted_node_scores_by_hand() -> None:
    # w_k = sum_{j != k} (w_kj - mean_k) / std_k * w_kj (Eqs. 5-6):
    #   A: k1 2*(0.5/1.5) = 2/3, k2 0, k3 2/3
    #   B: k1 (-1.5/1.5)*(-1) = 1, k2 0, k3 1
    #   C: k1 0, k2 0, k3 (0.5/1.5)*1 = 1/3
    #   D: k1 (-1.5/1.5)*(-1) = 1, k2 (-2/1)*(-1) = 2, k3 0
    # Ranks: k1 A 2, B 3.5, C 1, D 3.5; k2 A 2, B 2, C 2, D 4; k3 A 3, B 4, C 2, D 1
    # Mean: A 7/3, B 9.5/3, C 5/3, D 8.5/3
    np.testing.assert_allclose(
        gestalt_scores(POOL, "weighted_node", TRAIN), [7 / 3, 9.5 / 3, 5 / 3, 8.5 / 3]
    )


def test_most_similar_classes_score_highest() -> None:
    # Sample A's class maps are identical (least distinctive): the paper queries it first.
    for variant in ("node", "edge"):
        assert int(np.argmax(gestalt_scores(POOL, variant))) == 0


@pytest.mark.parametrize("variant", ["node", "edge", "weighted_node"])
def test_single_sample_pool_has_rank_one(variant: str) -> None:
    np.testing.assert_array_equal(gestalt_scores(POOL[:1], variant, TRAIN), [1.0])
