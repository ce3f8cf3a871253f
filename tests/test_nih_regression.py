"""Regression on the bundled NIH sample: the load -> rank -> select path on fixed latents.

The latents are a seeded random projection of the pixels (``fixed_latents`` below: exact
and machine-independent, unlike trained saliency latents), so a change in loading or ranking
shows up here. The expected ids were recorded from this code and agree exactly with the
naive reference (checked in the same test).
"""

from __future__ import annotations

import numpy as np
import pytest

from gestalt_al.data import bundled_nih_path, load_npz
from gestalt_al.ranking import gestalt_scores, select_top
from tests import reference

EXPECTED_TOP5 = {
    "node": [
        "00000013_028.png",
        "00000116_006.png",
        "00000041_001.png",
        "00000013_032.png",
        "00000181_004.png",
    ],
    "edge": [
        "00000013_028.png",
        "00000116_006.png",
        "00000116_010.png",
        "00000211_000.png",
        "00000116_033.png",
    ],
    "weighted_node": [
        "00000013_000.png",
        "00000181_024.png",
        "00000116_026.png",
        "00000013_013.png",
        "00000032_013.png",
    ],
}
EXPECTED_TOP_SCORE = {
    "node": 279.7857142857143,
    "edge": 207.2087912087912,
    "weighted_node": 269.7142857142857,
}


def fixed_latents(images: np.ndarray, num_classes: int, dim: int, seed: int) -> np.ndarray:
    """``[N, H, W]`` -> float32 ``[N, K, D]``: standardised pixels times K fixed Gaussians."""
    n = images.shape[0]
    pixels = images.reshape(n, -1).astype(np.float32)
    pixels -= pixels.mean(axis=1, keepdims=True)
    spread = pixels.std(axis=1, keepdims=True)
    np.divide(pixels, spread, out=pixels, where=spread > 0)
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((pixels.shape[1], num_classes * dim), dtype=np.float32)
    projection /= np.sqrt(np.float32(pixels.shape[1]))
    return (pixels @ projection).reshape(n, num_classes, dim)


@pytest.mark.parametrize("variant", list(EXPECTED_TOP5))
def test_nih_test_split_ranking(variant: str) -> None:
    pool = load_npz(bundled_nih_path(), "test")
    labeled = load_npz(bundled_nih_path(), "val")
    latents = fixed_latents(pool.images, pool.num_classes, dim=16, seed=3)
    train = fixed_latents(labeled.images, labeled.num_classes, dim=16, seed=3)
    scores = gestalt_scores(latents, variant, train)
    np.testing.assert_array_equal(scores, reference.scores(latents, variant, train))
    top = select_top(scores, pool.ids, 5)
    assert pool.ids[top.indices].tolist() == EXPECTED_TOP5[variant]
    assert top.scores[0] == pytest.approx(EXPECTED_TOP_SCORE[variant], abs=1e-9)
