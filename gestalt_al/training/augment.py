"""Random affine augmentation of image batches, on whatever device the batch lives.

Each sample gets its own rotation, translation and isotropic scale (the GESTALT paper's
recipe), drawn from a caller-owned ``torch.Generator`` so a seeded run is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional

# GESTALT (TMI) Sec. IV: rotations in [-25, 25] degrees, translations of [-10, 10] px at
# 320 px in each direction, isotropic scale in [0.95, 1.05].
PAPER_MAX_ROTATION_DEG = 25.0
PAPER_MAX_TRANSLATE = 10.0 / 320.0
PAPER_SCALE_RANGE = (0.95, 1.05)


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the per-sample affine: all uniform, symmetric about the identity.

    ``max_translate`` is a fraction of the image's width (x) and height (y), so the same
    config means the same motion at any resolution.
    """

    max_rotation_deg: float = PAPER_MAX_ROTATION_DEG
    max_translate: float = PAPER_MAX_TRANSLATE
    scale_range: tuple[float, float] = PAPER_SCALE_RANGE

    def __post_init__(self) -> None:
        values = (self.max_rotation_deg, self.max_translate, *self.scale_range)
        if len(self.scale_range) != 2 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"augmentation ranges must be finite numbers, got {self}")
        if self.max_rotation_deg < 0 or self.max_translate < 0:
            raise ValueError(
                "max_rotation_deg and max_translate must be >= 0, got "
                f"{self.max_rotation_deg} and {self.max_translate}"
            )
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(
                f"scale_range must be (low, high) with 0 < low <= high, got {low, high}"
            )


@dataclass(frozen=True)
class AffineParams:
    """Per-sample affine: rotation [B] (degrees, counter-clockwise on screen), translation
    [B, 2] (x right, y down, as fractions of width and height) and scale [B]."""

    rotation_deg: torch.Tensor
    translate: torch.Tensor
    scale: torch.Tensor

    def to(self, device: torch.device) -> AffineParams:
        return AffineParams(
            self.rotation_deg.to(device), self.translate.to(device), self.scale.to(device)
        )


def sample_affine_params(
    batch_size: int, config: AugmentConfig, generator: torch.Generator
) -> AffineParams:
    """Independent uniform draws per sample, on the generator's device."""

    def uniform(*shape: int, low: float, high: float) -> torch.Tensor:
        unit = torch.rand(shape, generator=generator, device=generator.device)
        return low + (high - low) * unit

    rotation, translate = config.max_rotation_deg, config.max_translate
    return AffineParams(
        rotation_deg=uniform(batch_size, low=-rotation, high=rotation),
        translate=uniform(batch_size, 2, low=-translate, high=translate),
        scale=uniform(batch_size, low=config.scale_range[0], high=config.scale_range[1]),
    )


def affine_theta(params: AffineParams, height: int, width: int) -> torch.Tensor:
    """The [B, 2, 3] output->input map in ``affine_grid``'s normalised coordinates.

    The motion is defined in pixels about the image centre (so a rotation stays a rotation
    on non-square images) and inverted, because ``grid_sample`` pulls from the input.
    """
    angle = torch.deg2rad(params.rotation_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Forward motion in (x right, y down) pixels is scale * [[cos, sin], [-sin, cos]];
    # its inverse is the transpose over the scale.
    inverse = (
        torch.stack([torch.stack([cos, -sin], dim=-1), torch.stack([sin, cos], dim=-1)], dim=-2)
        / params.scale[:, None, None]
    )
    # Normalised coordinates are pixels over half the extent: conjugate by diag(W/2, H/2).
    half = torch.tensor([width / 2.0, height / 2.0], dtype=inverse.dtype, device=inverse.device)
    linear = inverse * half[None, None, :] / half[None, :, None]
    # A shift of t * size pixels is 2 t in normalised units; the inverse undoes it first.
    offset = -(linear @ (2.0 * params.translate)[..., None])
    return torch.cat([linear, offset], dim=-1)


def apply_affine(images: torch.Tensor, params: AffineParams) -> torch.Tensor:
    """Warp each image of a [B, C, H, W] batch (bilinear, zeros outside), clamped to [0, 1]."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float [B, C, H, W] batch, got {images.dtype} {list(images.shape)}"
        )
    theta = affine_theta(params.to(images.device), images.shape[-2], images.shape[-1])
    grid = functional.affine_grid(theta, list(images.shape), align_corners=False)
    warped = functional.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return warped.clamp_(0.0, 1.0)


def augment_batch(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """A randomly warped copy of a [B, C, H, W] batch of [0, 1] images."""
    return apply_affine(images, sample_affine_params(images.shape[0], config, generator))
