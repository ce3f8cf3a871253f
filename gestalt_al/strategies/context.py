"""What a strategy may look at in one round, and the contract every strategy keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import nn

from gestalt_al.data import ImageSet
from gestalt_al.models import ModelConfig
from gestalt_al.ranking import Selection, select_top


@dataclass(frozen=True)
class QueryContext:
    """The round's trained task model and data; ``*_aux`` is a second modality of the same
    samples (M-VAAL's auxiliary input), None where the data set has none."""

    model: nn.Module
    config: ModelConfig
    labeled: ImageSet
    pool: ImageSet
    seed: int
    device: str = "cpu"
    labeled_aux: ImageSet | None = None
    pool_aux: ImageSet | None = None


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    def scores(self, context: QueryContext) -> np.ndarray:
        """``[len(context.pool)]`` float64, higher = more informative."""
        ...


def query(strategy: Strategy, context: QueryContext, budget: int) -> Selection:
    """The ``budget`` pool samples the strategy scores highest (ties by sample id)."""
    scores = np.asarray(strategy.scores(context), dtype=np.float64)
    if scores.shape != (len(context.pool),):
        raise ValueError(
            f"{strategy.name} gave {scores.shape} scores for a pool of {len(context.pool)}"
        )
    return select_top(scores, context.pool.ids, budget)
