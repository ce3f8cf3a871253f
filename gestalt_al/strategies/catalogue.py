"""Every strategy the learning-curve benchmark compares, by name."""

from __future__ import annotations

import math
from dataclasses import replace

from gestalt_al.mvaal import MVAALConfig
from gestalt_al.strategies.adversarial import AdversarialSampler
from gestalt_al.strategies.confidence import PredictiveUncertainty
from gestalt_al.strategies.context import Strategy
from gestalt_al.strategies.gestalt import GestaltStrategy
from gestalt_al.strategies.mc_dropout import MCDropout
from gestalt_al.strategies.random import RandomStrategy

# The paper's figures: the variants with Deep Taylor and with Grad-CAM maps, and the two
# ablations on the best variant (Weighted-Node).
GESTALT_STRATEGIES: tuple[GestaltStrategy, ...] = (
    *(
        GestaltStrategy(variant, method)
        for method in ("deep_taylor", "grad_cam")
        for variant in ("node", "edge", "weighted_node")
    ),
    GestaltStrategy("weighted_node", inverted=True),
    GestaltStrategy("weighted_node", features="image"),
)
MULTI_CLASS_ONLY = ("margin", "least_confidence")
NEEDS_AUX = ("mvaal",)


def _all(image_size: int, sampler_epochs: int) -> dict[str, Strategy]:
    # The sampler's four stride-2 convolutions want a multiple of 16 px: round up.
    sampler_size = 16 * math.ceil(image_size / 16)
    sampler = MVAALConfig(image_size=sampler_size, width=16, latent_dim=32, aux_channels=0)
    found: list[Strategy] = [
        RandomStrategy(),
        MCDropout("variance"),
        PredictiveUncertainty("entropy"),
        PredictiveUncertainty("margin"),
        PredictiveUncertainty("least_confidence"),
        MCDropout("bald"),
        AdversarialSampler(sampler, sampler_epochs),
        AdversarialSampler(replace(sampler, aux_channels=1), sampler_epochs),
    ]
    found.extend(GESTALT_STRATEGIES)
    return {strategy.name: strategy for strategy in found}


STRATEGY_NAMES: tuple[str, ...] = tuple(_all(32, 1))


def build_strategy(name: str, image_size: int, sampler_epochs: int = 10) -> Strategy:
    """The named strategy for a task model on ``image_size`` px images."""
    strategies = _all(image_size, sampler_epochs)
    if name not in strategies:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}")
    return strategies[name]
