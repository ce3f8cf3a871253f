"""Per-class saliency maps for every image: Deep Taylor (LRP z+), Grad-CAM, gradient.

``canonize`` turns a trained backbone into its LRP-ready form once per model version;
``class_saliency`` then gives all K class maps of a batch from one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from gestalt_al.saliency.canonical import CanonicalNet, canonize
from gestalt_al.saliency.deep_taylor import deep_taylor_relevance
from gestalt_al.saliency.grad_cam import grad_cam_maps
from gestalt_al.saliency.gradient import gradient_maps

Method = Literal["deep_taylor", "grad_cam", "gradient"]
METHODS: tuple[Method, ...] = ("deep_taylor", "grad_cam", "gradient")


def class_saliency(
    net: CanonicalNet,
    images: torch.Tensor,
    method: Method = "deep_taylor",
    classes: Sequence[int] | None = None,
    classes_per_pass: int | None = None,
) -> torch.Tensor:
    """``[B, K, H, W]`` maps, one per class in ``classes`` (default: all classes).

    Deep Taylor maps are signed relevance summed over colour channels (each sums to the
    class logit); Grad-CAM and gradient maps are >= 0.
    """
    num_classes = net.head.classifier.out_features
    chosen = torch.arange(num_classes) if classes is None else torch.as_tensor(list(classes))
    if chosen.ndim != 1 or len(chosen) == 0:
        raise ValueError("classes must be a non-empty list of class indices")
    if int(chosen.min()) < 0 or int(chosen.max()) >= num_classes:
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}, got {chosen.tolist()}")
    if images.ndim != 4 or images.shape[1] != net.in_channels:
        raise ValueError(f"images must be [B, {net.in_channels}, H, W], got {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
    chosen = chosen.to(images.device)
    if method == "deep_taylor":
        return deep_taylor_relevance(net, images, chosen, classes_per_pass).sum(dim=2)
    if method == "grad_cam":
        return grad_cam_maps(net, images, chosen)
    if method == "gradient":
        return gradient_maps(net, images, chosen, classes_per_pass)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


__all__ = ["METHODS", "CanonicalNet", "Method", "canonize", "class_saliency"]
