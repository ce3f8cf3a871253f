"""VAAL and M-VAAL: each round the sampler is trained afresh on labeled vs pool images (as in
both papers) and the pool samples its discriminator scores lowest are queried.

The sampler never sees the task model: it is the task-agnostic baseline. M-VAAL additionally
decodes the auxiliary modality; it needs one (``context.*_aux``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gestalt_al.data import PairedImageSet
from gestalt_al.models import unit_images
from gestalt_al.mvaal import MVAALConfig, discriminator_scores
from gestalt_al.mvaal.train import train_mvaal
from gestalt_al.strategies.context import QueryContext


@dataclass(frozen=True)
class AdversarialSampler:
    config: MVAALConfig
    epochs: int = 10

    @property
    def name(self) -> str:
        return "mvaal" if self.config.multimodal else "vaal"

    def scores(self, context: QueryContext) -> np.ndarray:
        if self.config.multimodal and (context.labeled_aux is None or context.pool_aux is None):
            raise ValueError("M-VAAL needs an auxiliary modality; this data set has none")
        aux = self.config.multimodal
        models, _ = train_mvaal(
            self.config,
            PairedImageSet(context.labeled, context.labeled_aux if aux else None),
            PairedImageSet(context.pool, context.pool_aux if aux else None),
            self.epochs,
            context.seed,
            show_progress=False,
        )
        images = unit_images(context.pool.images, self.config.image_size, 1)
        return -discriminator_scores(models.vae, models.discriminator, images)
