"""Random sampling: the baseline every other strategy has to beat."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gestalt_al.strategies.context import QueryContext


@dataclass(frozen=True)
class RandomStrategy:
    name: str = "random"

    def scores(self, context: QueryContext) -> np.ndarray:
        return np.random.default_rng(context.seed).random(len(context.pool))
