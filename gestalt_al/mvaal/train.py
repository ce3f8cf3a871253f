"""Single-process M-VAAL / VAAL training (Algorithm 1's sampler part) and its epoch step.

``train_mvaal_epoch`` is the unit a distributed wrapper (Ray Train) drives per worker;
``train_mvaal`` is the whole loop for one process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from gestalt_al.data import PairedImageSet
from gestalt_al.models import unit_images
from gestalt_al.mvaal.config import MVAALConfig
from gestalt_al.mvaal.losses import discriminator_loss, vae_adversarial, vae_losses
from gestalt_al.mvaal.networks import Discriminator, MultimodalVAE
from gestalt_al.mvaal.scoring import discriminator_scores


@dataclass(frozen=True)
class Modalities:
    """Model-ready tensors ``[N, C, S, S]`` in [0, 1] of the main and auxiliary images."""

    main: torch.Tensor
    aux: torch.Tensor | None

    @classmethod
    def from_paired(cls, data: PairedImageSet, config: MVAALConfig) -> Modalities:
        if config.multimodal and data.aux is None:
            raise ValueError("M-VAAL (aux_channels > 0) needs an auxiliary modality")
        main = unit_images(data.main.images, config.image_size, config.main_channels)
        aux = (
            unit_images(data.aux.images, config.image_size, config.aux_channels)
            if config.multimodal and data.aux is not None
            else None
        )
        return cls(main, aux)

    def __len__(self) -> int:
        return len(self.main)

    def take(self, indices: torch.Tensor) -> Modalities:
        return Modalities(self.main[indices], None if self.aux is None else self.aux[indices])

    def to(self, device: torch.device) -> Modalities:
        return Modalities(self.main.to(device), None if self.aux is None else self.aux.to(device))


@dataclass
class MVAALModels:
    """The VAE, the discriminator and their optimisers: everything a checkpoint holds."""

    vae: MultimodalVAE
    discriminator: Discriminator
    vae_optimizer: torch.optim.Optimizer
    discriminator_optimizer: torch.optim.Optimizer

    @classmethod
    def create(
        cls, config: MVAALConfig, seed: int = 0, device: torch.device | None = None
    ) -> MVAALModels:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae, discriminator = MultimodalVAE(config), Discriminator(config)
        vae, discriminator = vae.to(device), discriminator.to(device)
        return cls(
            vae,
            discriminator,
            torch.optim.Adam(vae.parameters(), lr=config.learning_rate),
            torch.optim.Adam(discriminator.parameters(), lr=config.learning_rate),
        )


@dataclass(frozen=True)
class MVAALEpoch:
    """Mean losses of one epoch and how well D then tells labeled from unlabeled (ROC-AUC)."""

    epoch: int
    vae_loss: float
    main_reconstruction: float
    aux_reconstruction: float
    kl: float
    adversarial: float
    discriminator_loss: float
    discriminator_auc: float
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def train_mvaal_epoch(
    models: MVAALModels,
    config: MVAALConfig,
    labeled: Modalities,
    unlabeled: Modalities,
    generator: torch.Generator,
    sync_gradients: Callable[[nn.Module], None] | None = None,
) -> dict[str, float]:
    """One pass over the unlabeled set (labeled batches cycle alongside); mean losses.

    Per iteration, as in the published code: ``vae_steps_per_d_step`` VAE updates, then one
    discriminator update. Labeled and unlabeled batches go through each network together.
    ``sync_gradients`` runs between each backward pass and optimiser step (data-parallel
    workers average their gradients there).
    """
    sync = sync_gradients or (lambda module: None)
    device = next(models.vae.parameters()).device
    models.vae.train()
    models.discriminator.train()
    batch = config.batch_size
    unlabeled_order = torch.randperm(len(unlabeled), generator=generator)
    labeled_order = torch.randperm(len(labeled), generator=generator)
    totals: dict[str, float] = {}
    # A last batch of one sample would stop batch norm (training needs two values per
    # channel): that sample waits for another epoch's shuffle instead.
    iterations = len(unlabeled) // batch + (len(unlabeled) % batch > 1)
    for step in range(iterations):
        unlabeled_batch = unlabeled.take(unlabeled_order[step * batch : (step + 1) * batch])
        start = (step * batch) % len(labeled)
        picked = labeled_order[start : start + batch]
        if len(picked) < min(batch, len(labeled)):
            labeled_order = torch.randperm(len(labeled), generator=generator)
            picked = labeled_order[:batch]
        labeled_batch = labeled.take(picked)
        both = _concat(labeled_batch, unlabeled_batch).to(device)
        for _ in range(config.vae_steps_per_d_step):
            terms = _vae_step(models, config, both, len(labeled_batch), sync)
        with torch.no_grad():
            mu, _ = models.vae.encode(both.main)
        d_loss = discriminator_loss(
            config, models.discriminator, mu[: len(labeled_batch)], mu[len(labeled_batch) :],
            generator,
        )  # fmt: skip
        models.discriminator_optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(d_loss)
        sync(models.discriminator)
        models.discriminator_optimizer.step()
        terms["discriminator_loss"] = float(d_loss.detach())
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + value / iterations
    return totals


def _concat(first: Modalities, second: Modalities) -> Modalities:
    aux = None if first.aux is None or second.aux is None else torch.cat([first.aux, second.aux])
    return Modalities(torch.cat([first.main, second.main]), aux)


def _vae_step(
    models: MVAALModels,
    config: MVAALConfig,
    both: Modalities,
    num_labeled: int,
    sync: Callable[[nn.Module], None],
) -> dict[str, float]:
    main_out, aux_out, _, mu, log_variance = models.vae(both.main)
    # D reads the posterior means, as in the published code; its weights are not updated here.
    adversarial = vae_adversarial(
        models.discriminator, mu[:num_labeled], mu[num_labeled:], config.adversarial_objective
    )
    losses = vae_losses(
        config, (main_out, aux_out), (both.main, both.aux), mu, log_variance, adversarial
    )
    models.vae_optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(losses.total)
    sync(models.vae)
    models.vae_optimizer.step()
    if not math.isfinite(float(losses.total.detach())):
        raise FloatingPointError("M-VAAL training diverged (NaN loss); lower the learning rate")
    return {
        "vae_loss": float(losses.total.detach()),
        "main_reconstruction": float(losses.main_reconstruction),
        "aux_reconstruction": float(losses.aux_reconstruction),
        "kl": float(losses.kl),
        "adversarial": float(losses.adversarial),
    }


def discriminator_auc(
    models: MVAALModels, config: MVAALConfig, labeled: Modalities, unlabeled: Modalities
) -> float:
    """ROC-AUC of D's scores for labeled (positive) vs unlabeled; 0.5 is chance."""
    scores = discriminator_scores(
        models.vae, models.discriminator, torch.cat([labeled.main, unlabeled.main]),
        config.score_on_mean,
    )  # fmt: skip
    is_labeled = np.r_[np.ones(len(labeled)), np.zeros(len(unlabeled))]
    return float(roc_auc_score(is_labeled, scores))


def checked_modalities(
    config: MVAALConfig, labeled: PairedImageSet, unlabeled: PairedImageSet, epochs: int
) -> tuple[Modalities, Modalities]:
    """Model-ready labeled and unlabeled sets, after the checks training relies on, so a bad
    request fails before any (distributed) worker starts."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(labeled) < 2 or len(unlabeled) < 2:
        raise ValueError(
            f"M-VAAL needs at least 2 labeled and 2 unlabeled samples, got "
            f"{len(labeled)} and {len(unlabeled)}"
        )
    return Modalities.from_paired(labeled, config), Modalities.from_paired(unlabeled, config)


def train_mvaal(
    config: MVAALConfig,
    labeled: PairedImageSet,
    unlabeled: PairedImageSet,
    epochs: int,
    seed: int = 0,
    on_epoch_end: Callable[[MVAALEpoch], None] | None = None,
    show_progress: bool = True,
) -> tuple[MVAALModels, list[MVAALEpoch]]:
    """Train the sampler for ``epochs`` on one process; returns it and its per-epoch record."""
    labeled_x, unlabeled_x = checked_modalities(config, labeled, unlabeled, epochs)
    models = MVAALModels.create(config, seed)
    generator = torch.Generator().manual_seed(seed)
    history: list[MVAALEpoch] = []
    bar = tqdm(range(1, epochs + 1), desc="M-VAAL" if config.multimodal else "VAAL",
               unit="epoch", disable=not show_progress)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the VAE's reparameterisation noise
        for epoch in bar:
            start = time.perf_counter()
            means = train_mvaal_epoch(models, config, labeled_x, unlabeled_x, generator)
            auc = discriminator_auc(models, config, labeled_x, unlabeled_x)
            record = MVAALEpoch(epoch=epoch, **means, discriminator_auc=auc,
                                seconds=time.perf_counter() - start)  # fmt: skip
            history.append(record)
            bar.set_postfix(vae=f"{record.vae_loss:.4f}", d=f"{record.discriminator_loss:.4f}",
                            auc=f"{auc:.3f}")  # fmt: skip
            if on_epoch_end is not None:
                on_epoch_end(record)
    return models, history
