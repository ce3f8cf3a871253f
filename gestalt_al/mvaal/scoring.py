"""The M-VAAL / VAAL query: the b pool samples the discriminator scores lowest."""

from __future__ import annotations

import numpy as np
import torch

from gestalt_al.mvaal.networks import Discriminator, MultimodalVAE
from gestalt_al.ranking import Selection, select_top


def discriminator_scores(
    vae: MultimodalVAE,
    discriminator: Discriminator,
    main_images: torch.Tensor,
    on_mean: bool = True,
    batch_size: int = 256,
) -> np.ndarray:
    """D(z) per pool sample ``[N]`` (float64), in eval mode; the modes are restored.

    ``on_mean`` scores the posterior mean (the published code); otherwise a sampled z.
    """
    if main_images.ndim != 4:
        raise ValueError(f"main_images must be [N, C, H, W], got {tuple(main_images.shape)}")
    if not bool(torch.isfinite(main_images).all()):
        raise ValueError("main_images contain NaN or infinite values")
    modes = vae.training, discriminator.training
    vae.eval()
    discriminator.eval()
    device = next(vae.parameters()).device
    try:
        with torch.no_grad():
            scores = []
            for chunk in torch.split(main_images, batch_size):
                mu, log_variance = vae.encode(chunk.to(device))
                z = mu if on_mean else mu + torch.randn_like(mu) * (0.5 * log_variance).exp()
                scores.append(discriminator(z).double().cpu())
    finally:
        vae.train(modes[0])
        discriminator.train(modes[1])
    return torch.cat(scores).numpy()


def select_lowest(scores: np.ndarray, ids: np.ndarray, budget: int) -> Selection:
    """The b lowest discriminator scores (least labeled-looking), lowest first.

    Returned ``scores`` are the negated discriminator scores, so that, as for every
    strategy, higher = more informative.
    """
    return select_top(-np.asarray(scores, dtype=np.float64), ids, budget)
