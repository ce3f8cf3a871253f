"""One GESTALT round on in-memory data: train -> saliency latents -> rank every variant.

This is the single-process form of what the distributed service does per round; the demo
runs it on the bundled NIH sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from gestalt_al.data import ImageSet
from gestalt_al.latents import AutoencoderConfig, SaliencyLatentEncoder
from gestalt_al.models import ModelConfig, as_model_input
from gestalt_al.models.config import Arch
from gestalt_al.ranking import VARIANTS, gestalt_scores
from gestalt_al.ranking.gestalt import Variant
from gestalt_al.saliency import Method
from gestalt_al.training import TrainConfig, TrainResult, train_task_model


@dataclass(frozen=True)
class RoundSettings:
    arch: Arch = "densenet121"
    image_size: int = 64
    method: Method = "deep_taylor"
    latent_dim: int = 64
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=15, patience=5))
    autoencoder_epochs: int = 30
    seed: int = 0


@dataclass(frozen=True)
class RoundResult:
    training: TrainResult
    model_config: ModelConfig
    encoder: SaliencyLatentEncoder
    labeled_latents: np.ndarray  # [M, K, D]
    pool_latents: np.ndarray  # [N, K, D]
    pool_maps: torch.Tensor  # [N, K, H, W]
    scores: dict[Variant, np.ndarray]  # per pool sample, higher = more informative


def run_round(
    labeled: ImageSet,
    pool: ImageSet,
    validation: ImageSet,
    settings: RoundSettings,
    variants: tuple[Variant, ...] = VARIANTS,
    progress: bool = True,
) -> RoundResult:
    """Train on ``labeled`` (early stopping on ``validation``), encode both sets' class
    saliency maps and score ``pool`` with each GESTALT variant."""
    if labeled.labels is None or validation.labels is None:
        raise ValueError("the labeled and validation sets need labels")
    config = ModelConfig(
        arch=settings.arch,
        num_classes=labeled.num_classes,
        task="multi_label" if labeled.multi_label else "multi_class",
        image_size=settings.image_size,
    )
    training = train_task_model(
        config,
        labeled.images,
        labeled.labels,
        validation.images,
        validation.labels,
        replace(settings.train, seed=settings.seed),
        show_progress=progress,
    )
    encoder, labeled_maps = SaliencyLatentEncoder.fit(
        training.model,
        as_model_input(labeled.images, config),
        settings.method,
        AutoencoderConfig(
            latent_dim=settings.latent_dim,
            epochs=settings.autoencoder_epochs,
            seed=settings.seed,
        ),
        progress=progress,
    )
    labeled_latents = encoder.encode(labeled_maps)
    pool_maps = encoder.maps(as_model_input(pool.images, config), progress)
    pool_latents = encoder.encode(pool_maps)
    scores = {v: gestalt_scores(pool_latents, v, labeled_latents) for v in variants}
    return RoundResult(training, config, encoder, labeled_latents, pool_latents, pool_maps, scores)
