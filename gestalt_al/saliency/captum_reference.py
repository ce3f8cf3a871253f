"""The naive way: one Captum call (forward and backward) per class. Reference and baseline."""

from __future__ import annotations

import torch
from captum.attr import LRP, LayerAttribution, LayerGradCam, Saliency

from gestalt_al.saliency.canonical import CanonicalNet
from gestalt_al.saliency.rules import attach_captum_rules


def captum_deep_taylor(net: CanonicalNet, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """LRP with the Deep Taylor composite, ``[B, K, C, H, W]``.

    Captum returns LRP attributions still attached to the autograd graph of their pass;
    detaching frees each class's graph (kept, K graphs exhaust memory at 224 px).
    """
    per_class = []
    for target in classes:
        attach_captum_rules(net)
        per_class.append(LRP(net).attribute(images, target=target).detach())
    return torch.stack(per_class, dim=1)


def captum_grad_cam(net: CanonicalNet, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Grad-CAM on the last feature map, bilinearly upsampled to the image, ``[B, K, H, W]``."""
    cam = LayerGradCam(net, net.feature_layer)
    per_class = [
        LayerAttribution.interpolate(
            cam.attribute(images, target=target, relu_attributions=True).detach(),
            tuple(images.shape[-2:]),
            interpolate_mode="bilinear",
        )[:, 0]
        for target in classes
    ]
    return torch.stack(per_class, dim=1)


def captum_gradient(net: CanonicalNet, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """|d logit / d pixel|, maximum over channels, ``[B, K, H, W]``."""
    saliency = Saliency(net)
    per_class = [
        saliency.attribute(images, target=target, abs=True).amax(dim=1) for target in classes
    ]
    return torch.stack(per_class, dim=1)
