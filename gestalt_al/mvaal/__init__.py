"""M-VAAL and VAAL: a VAE (with an optional auxiliary-modality decoder) against a WGAN-GP
discriminator on latents; the pool samples it scores lowest are queried."""

from gestalt_al.mvaal.config import MVAALConfig
from gestalt_al.mvaal.losses import (
    VAELosses,
    discriminator_loss,
    gradient_penalty,
    kl_to_standard_normal,
    vae_adversarial,
    vae_losses,
)
from gestalt_al.mvaal.networks import Discriminator, MultimodalVAE
from gestalt_al.mvaal.scoring import discriminator_scores, select_lowest

__all__ = [
    "Discriminator",
    "MVAALConfig",
    "MultimodalVAE",
    "VAELosses",
    "discriminator_loss",
    "discriminator_scores",
    "gradient_penalty",
    "kl_to_standard_normal",
    "select_lowest",
    "vae_adversarial",
    "vae_losses",
]
