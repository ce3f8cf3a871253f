"""PLACEHOLDER latents: a fixed random projection of each image, one projection per class.

These are NOT saliency latents. They exist so the ranking pipeline runs end to end before the
task models and saliency maps (Deep Taylor / Grad-CAM) land; the README says so. They depend
only on the image and the seed, so results are reproducible.
"""

from __future__ import annotations

import numpy as np


def random_projection_latents(
    images: np.ndarray, num_classes: int, dim: int = 64, seed: int = 0
) -> np.ndarray:
    """``[N, H, W]`` -> float32 ``[N, K, D]``: standardised pixels times K fixed Gaussians."""
    if images.ndim != 3:
        raise ValueError(f"images must be [N, H, W], got shape {images.shape}")
    if num_classes < 2 or dim < 1:
        raise ValueError(f"need num_classes >= 2 and dim >= 1, got {num_classes}, {dim}")
    n = images.shape[0]
    pixels = images.reshape(n, -1).astype(np.float32)
    pixels -= pixels.mean(axis=1, keepdims=True)
    spread = pixels.std(axis=1, keepdims=True)
    # A constant image is all zeros once centred: it projects to zero latents (never NaN).
    np.divide(pixels, spread, out=pixels, where=spread > 0)
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((pixels.shape[1], num_classes * dim), dtype=np.float32)
    projection /= np.sqrt(np.float32(pixels.shape[1]))
    return (pixels @ projection).reshape(n, num_classes, dim)
