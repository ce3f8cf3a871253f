"""One simulated AL run: train -> evaluate -> query -> the oracle labels -> retrain."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from torch import nn

from gestalt_al.models import ModelConfig
from gestalt_al.models.config import Arch
from gestalt_al.simulation.datasets import SimulationData
from gestalt_al.strategies import QueryContext, build_strategy, query
from gestalt_al.training import TrainConfig, evaluate, train_task_model


def _default_train() -> TrainConfig:
    # Chosen on the validation splits (learning rate 1e-4 vs 1e-3, epochs): see the README.
    return TrainConfig(learning_rate=1e-3, max_epochs=20, patience=5)


@dataclass(frozen=True)
class SimulationSettings:
    initial_labeled: int = 40
    budget: int = 40  # labels per round
    rounds: int = 5  # query rounds after the initial model
    arch: Arch = "small_cnn"
    train: TrainConfig = field(default_factory=_default_train)
    sampler_epochs: int = 10

    def __post_init__(self) -> None:
        for name in ("initial_labeled", "budget", "rounds", "sampler_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def final_labels(self) -> int:
        return self.initial_labeled + self.rounds * self.budget


@dataclass(frozen=True)
class CurvePoint:
    """The model trained on ``labels`` samples: test metrics, best validation AUC, the ids it
    then queried (none after the last round) and the round's seconds (training + query)."""

    labels: int
    test: dict[str, float]
    val_macro_auc: float
    queried: list[str]
    seconds: float


def simulate(
    data: SimulationData, strategy_name: str, seed: int, settings: SimulationSettings
) -> list[CurvePoint]:
    """The learning curve of one strategy and seed. The initial set and every training seed
    depend only on ``seed`` and the round, so strategies differ only in what they query."""
    if data.train.labels is None or data.val.labels is None or data.test.labels is None:
        raise ValueError(f"{data.name}: simulation needs labels on train, val and test")
    if settings.final_labels > len(data.train):
        raise ValueError(
            f"{settings.final_labels} labels requested but the pool has {len(data.train)} samples"
        )
    strategy = build_strategy(strategy_name, data.image_size, settings.sampler_epochs)
    config = ModelConfig(
        settings.arch, data.train.num_classes,
        "multi_label" if data.train.multi_label else "multi_class", image_size=data.image_size,
    )  # fmt: skip
    labeled = np.sort(
        np.random.default_rng(seed).choice(len(data.train), settings.initial_labeled, False)
    )
    curve: list[CurvePoint] = []
    for round_index in range(settings.rounds + 1):
        started = time.perf_counter()
        trained = train_task_model(
            config, data.train.images[labeled], data.train.labels[labeled], data.val.images,
            data.val.labels, replace(settings.train, seed=seed * 1000 + round_index),
            show_progress=False,
        )  # fmt: skip
        test = evaluate(trained.model, data.test.images, data.test.labels, config)
        trained_on = len(labeled)
        chosen = np.zeros(0, dtype=np.int64)
        if round_index < settings.rounds:
            pool = np.setdiff1d(np.arange(len(data.train)), labeled)
            context = _context(
                data, trained.model, config, labeled, pool, seed * 1000 + round_index
            )
            chosen = pool[query(strategy, context, settings.budget).indices]
            labeled = np.sort(np.concatenate([labeled, chosen]))
        scalars = {k: float(v) for k, v in test.as_dict().items() if isinstance(v, int | float)}
        curve.append(CurvePoint(trained_on, scalars, float(trained.best_metrics.macro_auc),
                                [str(i) for i in data.train.ids[chosen]],
                                time.perf_counter() - started))  # fmt: skip
    return curve


def _context(
    data: SimulationData,
    model: nn.Module,
    config: ModelConfig,
    labeled: np.ndarray,
    pool: np.ndarray,
    seed: int,
) -> QueryContext:
    aux = data.train_aux
    return QueryContext(
        model, config, data.train.subset(labeled), data.train.subset(pool), seed,
        str(next(model.parameters()).device),
        aux.subset(labeled) if aux is not None else None,
        aux.subset(pool) if aux is not None else None,
    )  # fmt: skip
