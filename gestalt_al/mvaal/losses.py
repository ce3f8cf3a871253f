"""The M-VAAL objectives as losses to minimise (Eqs. 1-5 of the paper).

The paper writes the reconstruction terms as log-likelihoods; with a Gaussian decoder of fixed
variance their negatives are mean squared errors, which is what VAAL's code minimises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from gestalt_al.mvaal.config import AdversarialObjective, MVAALConfig


@dataclass(frozen=True)
class VAELosses:
    """The weighted VAE objective and its terms (unweighted), for logging."""

    total: torch.Tensor
    main_reconstruction: torch.Tensor
    aux_reconstruction: torch.Tensor
    kl: torch.Tensor
    adversarial: torch.Tensor


def kl_to_standard_normal(mu: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), summed over latent dims, averaged over the batch."""
    per_sample = -0.5 * (1 + log_variance - mu.pow(2) - log_variance.exp()).sum(dim=1)
    return per_sample.mean()


def vae_adversarial(
    discriminator: nn.Module,
    labeled_z: torch.Tensor,
    unlabeled_z: torch.Tensor,
    objective: AdversarialObjective = "eq4",
) -> torch.Tensor:
    """The VAE's adversarial term, to minimise.

    ``"eq4"``: E[D(z_L)] - E[D(z_U)] (the paper's Eq. 4; also minus D's Wasserstein loss).
    ``"all_labeled"``: -E[D(z)] over both sets, so every latent is pushed to look labeled.
    Both sets go through D in one batch: D has batch norm, and two separate calls would
    normalise each set by its own statistics in training, hiding the very shift between them
    that D must see (and that its running statistics, used when scoring, do contain).
    """
    scores: torch.Tensor = discriminator(torch.cat([labeled_z, unlabeled_z]))
    if objective == "all_labeled":
        return -scores.mean()
    return scores[: len(labeled_z)].mean() - scores[len(labeled_z) :].mean()


def vae_losses(
    config: MVAALConfig,
    reconstruction: tuple[torch.Tensor, torch.Tensor | None],
    target: tuple[torch.Tensor, torch.Tensor | None],
    mu: torch.Tensor,
    log_variance: torch.Tensor,
    adversarial: torch.Tensor,
) -> VAELosses:
    """gamma_1 adv + gamma_2 rec_main + gamma_3 rec_aux + beta KL (Algorithm 1, line 100).

    ``reconstruction``, ``target``, ``mu`` and ``log_variance`` cover labeled and unlabeled
    samples together (Eqs. 1-3 sum the two sets' terms).
    """
    main = functional.mse_loss(reconstruction[0], target[0])
    aux = torch.zeros((), device=main.device)
    if config.multimodal:
        if reconstruction[1] is None or target[1] is None:
            raise ValueError("M-VAAL (aux_channels > 0) needs the auxiliary modality")
        aux = functional.mse_loss(reconstruction[1], target[1])
    kl = kl_to_standard_normal(mu, log_variance)
    total = (
        config.gamma_adv * adversarial
        + config.gamma_main * main
        + config.gamma_aux * aux
        + config.beta * kl
    )
    return VAELosses(total, main.detach(), aux.detach(), kl.detach(), adversarial.detach())


def gradient_penalty(
    discriminator: nn.Module,
    labeled_z: torch.Tensor,
    unlabeled_z: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """E[(||grad D(z_hat)|| - 1)^2] at random points between paired latents (WGAN-GP).

    The paper's text interpolates images, but D reads latents; like the published code, the
    points are interpolated latents. Pairs are taken up to the shorter batch.
    """
    n = min(len(labeled_z), len(unlabeled_z))
    # Drawn where the generator lives (the CPU), then moved: CUDA ops refuse CPU generators.
    weight = torch.rand((n, 1), generator=generator).to(labeled_z.device)
    points = weight * labeled_z[:n].detach() + (1 - weight) * unlabeled_z[:n].detach()
    points.requires_grad_(True)
    (gradients,) = torch.autograd.grad(discriminator(points).sum(), points, create_graph=True)
    penalty: torch.Tensor = (gradients.norm(dim=1) - 1).pow(2).mean()
    return penalty


def discriminator_loss(
    config: MVAALConfig,
    discriminator: nn.Module,
    labeled_z: torch.Tensor,
    unlabeled_z: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Eq. 5: -E[D(z_L)] + E[D(z_U)] + lambda GP: labeled pushed up, unlabeled down."""
    labeled_z, unlabeled_z = labeled_z.detach(), unlabeled_z.detach()
    wasserstein: torch.Tensor = -vae_adversarial(discriminator, labeled_z, unlabeled_z)
    penalty = gradient_penalty(discriminator, labeled_z, unlabeled_z, generator)
    return wasserstein + config.gp_weight * penalty
