"""Uncertainty of one deterministic prediction: entropy, margin, least confidence.

Multi-class: over the softmax. Multi-label: each finding is its own binary problem, so the
measure is taken per class on (p, 1 - p) and averaged over classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gestalt_al.strategies.context import QueryContext
from gestalt_al.training import predict_probabilities

Measure = Literal["entropy", "margin", "least_confidence"]
EPS = 1e-12


def class_distributions(probabilities: np.ndarray, multi_label: bool) -> np.ndarray:
    """``[N, K]`` probabilities as distributions over outcomes: ``[N, K, 2]`` (per finding:
    present, absent) when multi-label, else ``[N, 1, K]``."""
    p = np.asarray(probabilities, dtype=np.float64)
    if multi_label:
        return np.stack([p, 1.0 - p], axis=-1)
    return p[:, None, :]


def entropy(distributions: np.ndarray) -> np.ndarray:
    """Entropy over the last axis, averaged over the middle one: ``[N]``."""
    d = np.clip(distributions, EPS, 1.0)
    return np.asarray(-(d * np.log(d)).sum(axis=-1).mean(axis=-1))


def uncertainty(distributions: np.ndarray, measure: Measure) -> np.ndarray:
    if measure == "entropy":
        return entropy(distributions)
    top_two = np.sort(distributions, axis=-1)[..., -2:]
    if measure == "margin":  # a small gap between the two likeliest outcomes = uncertain
        return np.asarray((1.0 - (top_two[..., 1] - top_two[..., 0])).mean(axis=-1))
    return np.asarray((1.0 - top_two[..., 1]).mean(axis=-1))


@dataclass(frozen=True)
class PredictiveUncertainty:
    measure: Measure = "entropy"

    @property
    def name(self) -> str:
        return self.measure

    def scores(self, context: QueryContext) -> np.ndarray:
        probabilities = predict_probabilities(context.model, context.pool.images, context.config)
        distributions = class_distributions(probabilities, context.config.task == "multi_label")
        return uncertainty(distributions, self.measure)
