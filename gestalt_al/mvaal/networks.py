"""VAAL's beta-VAE with an optional auxiliary-modality decoder, and the latent discriminator."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from gestalt_al.mvaal.config import MVAALConfig

_LEVELS = 4  # stride-2 stages: image_size -> image_size / 16


def _encoder_stage(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def _decoder_stage(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class Decoder(nn.Module):
    """z -> image of ``channels`` channels in [0, 1] (Sigmoid; inputs are scaled to [0, 1])."""

    def __init__(self, config: MVAALConfig, channels: int) -> None:
        super().__init__()
        widths = [config.width * 2**level for level in reversed(range(_LEVELS))]
        self.side = config.image_size // 2**_LEVELS
        self.project = nn.Linear(config.latent_dim, widths[0] * self.side**2)
        stages = [m for a, b in itertools.pairwise(widths) for m in _decoder_stage(a, b)]
        self.body = nn.Sequential(
            nn.ReLU(), *stages, nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Sigmoid()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(len(z), -1, self.side, self.side)
        image: torch.Tensor = self.body(x)
        return image


class MultimodalVAE(nn.Module):
    """Encodes the main modality only; decodes both modalities from the same z."""

    def __init__(self, config: MVAALConfig) -> None:
        super().__init__()
        widths = [config.main_channels] + [config.width * 2**level for level in range(_LEVELS)]
        stages = [m for a, b in itertools.pairwise(widths) for m in _encoder_stage(a, b)]
        self.encoder = nn.Sequential(*stages, nn.Flatten())
        features = widths[-1] * (config.image_size // 2**_LEVELS) ** 2
        self.mean = nn.Linear(features, config.latent_dim)
        self.log_variance = nn.Linear(features, config.latent_dim)
        self.main_decoder = Decoder(config, config.main_channels)
        self.aux_decoder = Decoder(config, config.aux_channels) if config.multimodal else None

    def encode(self, main: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2) of q(z | x_main)."""
        features = self.encoder(main)
        return self.mean(features), self.log_variance(features)

    def forward(
        self, main: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(main reconstruction, aux reconstruction or None, z, mu, log variance)."""
        mu, log_variance = self.encode(main)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_variance)
        aux = self.aux_decoder(z) if self.aux_decoder is not None else None
        return self.main_decoder(z), aux, z, mu, log_variance


class Discriminator(nn.Module):
    """MLP on latents: z -> 512 -> 512 -> 1, batch norm after each hidden linear (M-VAAL)."""

    def __init__(self, config: MVAALConfig, hidden: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Linear(config.latent_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        ]  # fmt: skip
        if config.discriminator_sigmoid:
            layers.append(nn.Sigmoid())
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """One score per latent, ``[B]``: higher = looks labeled."""
        score: torch.Tensor = self.body(z)
        return score.squeeze(1)
