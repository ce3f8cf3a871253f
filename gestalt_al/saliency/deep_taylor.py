"""Deep Taylor (LRP z+) maps for many classes from one forward pass."""

from __future__ import annotations

import torch

from gestalt_al.saliency.backprop import one_hot_seeds, per_class_vjp
from gestalt_al.saliency.canonical import CanonicalNet


def deep_taylor_relevance(
    net: CanonicalNet,
    images: torch.Tensor,
    classes: torch.Tensor,
    classes_per_pass: int | None = None,
) -> torch.Tensor:
    """Input relevance ``[B, K, C, H, W]``; each class's relevance sums to its logit.

    The relevance graph (see ``rules``) is built once; each class is one seed, its one-hot
    times its logit as Captum starts, pushed back through that graph.
    """
    if bool((images < 0).any()):
        raise ValueError("Deep Taylor's z+ rule at the first layer needs images >= 0")
    with torch.enable_grad():
        relevance_in = torch.ones_like(images, requires_grad=True)
        logits, relevance_out = net.relevance(images, relevance_in)
        seeds = one_hot_seeds(logits, classes, times_logit=True)
        relevance = per_class_vjp(relevance_out, relevance_in, seeds, classes_per_pass)
    return relevance.transpose(0, 1)
