"""Stored images -> the float tensor a task model takes: [N, C, S, S] in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional

from gestalt_al.models.config import ModelConfig


def as_model_input(images: np.ndarray | torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The task model's input: ``unit_images`` at its size and channels."""
    return unit_images(images, config.image_size, config.in_channels)


def unit_images(images: np.ndarray | torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Scale to [0, 1] (uint8 / 255; floats must already be in [0, 1]), resize to
    ``size`` x ``size``, set ``channels`` (1 or 3).

    Accepts ``[N, H, W]`` (grey) or ``[N, C, H, W]`` with C in {1, 3}.
    """
    batch = torch.as_tensor(images)
    if batch.ndim == 3:
        batch = batch[:, None]
    if batch.ndim != 4 or batch.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be [N, H, W] or [N, C, H, W] with C in (1, 3), got {tuple(batch.shape)}"
        )
    if batch.dtype == torch.uint8:
        batch = batch.float() / 255.0
    elif batch.is_floating_point():
        batch = batch.float()
        if not bool(torch.isfinite(batch).all()):
            raise ValueError("images contain NaN or infinite values")
        if batch.numel() and (float(batch.min()) < 0.0 or float(batch.max()) > 1.0):
            raise ValueError(
                f"float images must lie in [0, 1], got [{float(batch.min()):.3g}, "
                f"{float(batch.max()):.3g}]; pass uint8 or rescale first"
            )
    else:
        raise ValueError(f"images must be uint8 or floating point, got {batch.dtype}")
    if batch.shape[-2:] != (size, size):
        batch = functional.interpolate(
            batch,
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        ).clamp_(0.0, 1.0)
    if batch.shape[1] != channels:
        batch = batch.expand(-1, 3, -1, -1) if channels == 3 else batch.mean(dim=1, keepdim=True)
    return batch.contiguous()
