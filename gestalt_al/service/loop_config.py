"""What a continuous active-learning loop is asked to do, as validated plain data.

A loop is stored with its configuration, and a restarted coordinator rebuilds the loop from
it, so everything it needs is here: the pool and its reference data (validation, optional
test and, in simulation, the oracle's ground truth), the query strategy, the per-round budget,
the stopping rule and how each round retrains its models.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from gestalt_al.models.config import ARCHS
from gestalt_al.saliency import METHODS
from gestalt_al.service.errors import InvalidArgumentError
from gestalt_al.service.pool import POOL_ID
from gestalt_al.service.strategies import SAMPLER_STRATEGIES, STRATEGIES

LABEL_SOURCES = ("oracle", "external")
SAMPLER_NEEDED = (*SAMPLER_STRATEGIES, "hybrid")


def _fail(message: str) -> None:
    raise InvalidArgumentError(message)


@dataclass(frozen=True)
class ModelSettings:
    """How a round retrains: the task model (Ray Train), the map autoencoder fitted on its
    saliency maps, and optionally a VAAL sampler (Ray Train). ``image_size`` 0 means the
    stored images' size; ``sampler_epochs`` 0 means no sampler. ``latent_dim`` is both the
    autoencoder's and the sampler's latent size."""

    arch: str = "resnet18"
    image_size: int = 0
    epochs: int = 6
    saliency: str = "deep_taylor"
    latent_dim: int = 32
    autoencoder_epochs: int = 15
    sampler_epochs: int = 0
    sampler_width: int = 16
    workers: int = 2
    cpus_per_worker: float = 0.0  # 0: Ray Train's default (1 CPU per worker, none with a GPU)
    use_gpu: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            _fail(f"arch must be one of {list(ARCHS)}, got {self.arch!r}")
        if self.saliency not in METHODS:
            _fail(f"saliency must be one of {list(METHODS)}, got {self.saliency!r}")
        for name in ("epochs", "latent_dim", "autoencoder_epochs", "sampler_width", "workers"):
            if getattr(self, name) < 1:
                _fail(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.sampler_epochs < 0 or self.image_size < 0:
            _fail("model.sampler_epochs and model.image_size must be >= 0 (0: default)")
        if not (math.isfinite(self.cpus_per_worker) and self.cpus_per_worker >= 0):
            _fail(f"model.cpus_per_worker must be >= 0 (0: default), got {self.cpus_per_worker}")

    @property
    def with_sampler(self) -> bool:
        return self.sampler_epochs > 0


@dataclass(frozen=True)
class LoopConfig:
    """One loop over one registered pool. Validated on construction (``InvalidArgumentError``,
    a ``ValueError``, saying what to change).

    Rounds continue until ``max_rounds`` rounds have queried, or the labeled set reaches
    ``max_labels`` (0 = no limit; at least one limit is required), or no unqueried sample is
    left; a last round then only retrains and evaluates on the final labeled set.
    ``label_source`` is ``oracle`` (ground truth of ``data``'s ``oracle_split``, matched by
    sample id: simulation) or ``external`` (people submit labels with SubmitLabels; the loop
    polls every ``poll_seconds``). ``data`` is an ``.npz`` archive in the MedMNIST layout
    (``<split>_<images_key>``, ``<split>_labels``, ids) at an absolute path the coordinator's
    node can read; its ``validation_split`` drives early stopping, its ``test_split``
    (optional) is evaluated after every round.
    """

    pool_id: str
    data: str
    loop_id: str = ""  # default "<pool>-loop"
    strategy: str = "gestalt_node"
    budget: int = 10
    initial_labeled: int = 100
    max_rounds: int = 0
    max_labels: int = 0
    label_source: str = "oracle"
    images_key: str = "images"
    validation_split: str = "val"
    test_split: str = ""
    oracle_split: str = "train"
    seed: int = 0
    poll_seconds: float = 5.0
    model: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        if not self.loop_id:
            object.__setattr__(self, "loop_id", f"{self.pool_id}-loop"[:63])
        for name in ("pool_id", "loop_id"):
            if not POOL_ID.match(getattr(self, name)):
                _fail(f"{name} {getattr(self, name)!r} must be 1 to 63 lowercase letters, "
                      "digits, _ or -, starting with a letter or digit")  # fmt: skip
        if not self.data:
            _fail("data is required: an .npz archive with a labeled validation split")
        if not os.path.isabs(self.data):
            _fail(f"data must be an absolute path on the coordinator's node, got {self.data!r}")
        if self.strategy not in STRATEGIES:
            _fail(f"unknown strategy {self.strategy!r}; choose one of {list(STRATEGIES)}")
        if self.strategy == "mvaal":
            _fail("loops train VAAL (a pool holds one modality): use strategy 'vaal'")
        if self.strategy in SAMPLER_NEEDED and not self.model.with_sampler:
            _fail(f"strategy {self.strategy!r} needs a sampler: set model.sampler_epochs >= 1")
        if self.budget < 1 or self.initial_labeled < 2:
            _fail(f"budget must be >= 1 and initial_labeled >= 2, got {self.budget}, "
                  f"{self.initial_labeled}")  # fmt: skip
        if self.max_rounds < 0 or self.max_labels < 0:
            _fail("max_rounds and max_labels must be >= 0 (0: no limit)")
        if not (self.max_rounds or self.max_labels):
            _fail("set a stopping rule: max_rounds and/or max_labels")
        if self.max_labels and self.max_labels <= self.initial_labeled:
            _fail(f"max_labels ({self.max_labels}) must exceed initial_labeled "
                  f"({self.initial_labeled})")  # fmt: skip
        if self.label_source not in LABEL_SOURCES:
            _fail(f"label_source must be one of {list(LABEL_SOURCES)}, got "
                  f"{self.label_source!r}")  # fmt: skip
        if not self.validation_split or not self.images_key:
            _fail("validation_split and images_key must not be empty")
        if not (math.isfinite(self.poll_seconds) and 0 < self.poll_seconds <= 3600):
            _fail(f"poll_seconds must be in (0, 3600], got {self.poll_seconds}")
        if self.seed < 0:
            _fail(f"seed must be >= 0 (it seeds numpy's generator), got {self.seed}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LoopConfig:
        """The inverse of ``dataclasses.asdict``; unknown keys are refused (a stored config
        is never guessed at)."""
        _known(cls, raw, "loop config")
        model = raw.get("model", {})
        _known(ModelSettings, model, "model settings")
        return cls(**{**raw, "model": ModelSettings(**model)})


def _known(kind: type, raw: dict[str, Any], what: str) -> None:
    unknown = set(raw) - {f.name for f in fields(kind)}
    if unknown:
        _fail(f"unknown {what} fields {sorted(unknown)}")
