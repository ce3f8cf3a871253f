"""Plain gradient saliency (Simonyan et al.) for many classes from one forward pass."""

from __future__ import annotations

import torch

from gestalt_al.saliency.backprop import one_hot_seeds, per_class_vjp
from gestalt_al.saliency.canonical import CanonicalNet


def gradient_maps(
    net: CanonicalNet,
    images: torch.Tensor,
    classes: torch.Tensor,
    classes_per_pass: int | None = None,
) -> torch.Tensor:
    """|d logit_k / d pixel|, maximum over channels: ``[B, K, H, W]``."""
    with torch.enable_grad():
        leaf = images.detach().requires_grad_(True)
        logits = net(leaf)
        seeds = one_hot_seeds(logits, classes, times_logit=False)
        gradients = per_class_vjp(logits, leaf, seeds, classes_per_pass)
    return gradients.abs().amax(dim=2).transpose(0, 1)
