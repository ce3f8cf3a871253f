"""Grad-CAM for many classes from one forward pass through the backbone."""

from __future__ import annotations

import torch
from torch.nn import functional

from gestalt_al.saliency.backprop import one_hot_seeds, per_class_vjp
from gestalt_al.saliency.canonical import CanonicalNet


def grad_cam_maps(net: CanonicalNet, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_c mean(d logit_k / dA_c) A_c), upsampled to the image: ``[B, K, H, W]``.

    Only the head (pool + linear) is differentiated, so all classes go in one pass; the
    backbone runs once for all of them.
    """
    with torch.no_grad():
        features = net.features(images)
    with torch.enable_grad():
        leaf = features.requires_grad_(True)
        logits = net.head(leaf)
        seeds = one_hot_seeds(logits, classes, times_logit=False)
        gradients = per_class_vjp(logits, leaf, seeds, classes_per_pass=len(classes))
    channel_weights = gradients.mean(dim=(-2, -1), keepdim=True)  # [K, B, C, 1, 1]
    cams = torch.relu((channel_weights * features.detach()).sum(dim=2)).transpose(0, 1)
    return functional.interpolate(cams, size=images.shape[-2:], mode="bilinear")
