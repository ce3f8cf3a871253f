"""M-VAAL / VAAL settings with the paper's defaults (MIUA 2023, Sec. 3.2 and its code)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

AdversarialObjective = Literal["all_labeled", "eq4"]
ADVERSARIAL_OBJECTIVES: tuple[AdversarialObjective, ...] = ("all_labeled", "eq4")
MIN_IMAGE_SIZE = 16  # four stride-2 convolutions leave a 1x1 map at 16 px


@dataclass(frozen=True)
class MVAALConfig:
    """One implementation serves both methods: ``aux_channels = 0`` is VAAL.

    ``width`` is the first encoder layer's channels (VAAL's network: 128, doubling to 1024);
    tests use a few channels. ``discriminator_sigmoid`` and ``score_on_mean`` record choices
    of the published code that the paper's text leaves open; the defaults follow the code.
    ``adversarial_objective`` is the VAE's side of the game: ``"all_labeled"`` (VAAL's: every
    latent should look labeled, -E[D(z)] over both sets) or ``"eq4"`` (the paper's Eq. 4 and
    its code: E[D(z_L)] - E[D(z_U)], which also pushes labeled latents to look unlabeled; on
    the LGG sample it turns the discriminator's ranking upside down, see the README).
    """

    image_size: int = 64
    main_channels: int = 1
    aux_channels: int = 1
    latent_dim: int = 64
    width: int = 128
    beta: float = 1.0  # weight of the KL term (beta-VAE)
    gamma_adv: float = 1.0  # gamma_1
    gamma_main: float = 1.0  # gamma_2
    gamma_aux: float = 1.0  # gamma_3, one of 0.2, 0.4, 0.8, 1 in the paper's ablation
    gp_weight: float = 1.0  # lambda of the gradient penalty
    discriminator_sigmoid: bool = True  # the published code ends D with a Sigmoid
    score_on_mean: bool = True  # score pool samples by D(mu), not D(sampled z)
    adversarial_objective: AdversarialObjective = "all_labeled"
    learning_rate: float = 1e-4
    batch_size: int = 16
    vae_steps_per_d_step: int = 2

    def __post_init__(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE or self.image_size % 16:
            raise ValueError(
                f"image_size must be a multiple of 16 and >= {MIN_IMAGE_SIZE}, "
                f"got {self.image_size}"
            )
        if self.main_channels < 1 or self.aux_channels < 0:
            raise ValueError(
                f"main_channels must be >= 1 and aux_channels >= 0, got "
                f"{self.main_channels} and {self.aux_channels}"
            )
        for name in ("latent_dim", "width", "batch_size", "vae_steps_per_d_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("beta", "gamma_adv", "gamma_main", "gamma_aux", "gp_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if self.adversarial_objective not in ADVERSARIAL_OBJECTIVES:
            raise ValueError(
                f"adversarial_objective must be one of {ADVERSARIAL_OBJECTIVES}, "
                f"got {self.adversarial_objective!r}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be finite and > 0, got {self.learning_rate}")

    @property
    def multimodal(self) -> bool:
        return self.aux_channels > 0
