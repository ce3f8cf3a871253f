"""M-VAAL / VAAL sampler training under Ray Train: each worker takes a shard of the labeled
and of the unlabeled set and the workers average gradients before every optimiser step (by
hand, not DDP: the gradient penalty differentiates the discriminator twice)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from gestalt_al.data import PairedImageSet
from gestalt_al.distributed.collectives import (
    average_gradients,
    from_rank_zero,
    mean_over_workers,
    shard_indices,
)
from gestalt_al.distributed.epochs import RayRun, fit, run_epochs
from gestalt_al.mvaal.config import MVAALConfig
from gestalt_al.mvaal.train import (
    Modalities,
    MVAALModels,
    checked_modalities,
    discriminator_auc,
    train_mvaal_epoch,
)


class MVAALProgram:
    """One worker's share of training the VAE and the discriminator."""

    def __init__(self, loop_config: dict[str, Any]) -> None:
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.config: MVAALConfig = loop_config["config"]
        self.seed: int = loop_config["seed"]
        self.all_labeled, self.all_unlabeled = ray.get(loop_config["data"])
        self.labeled = self._shard(self.all_labeled)
        self.unlabeled = self._shard(self.all_unlabeled)
        # Same seed on every worker: identical initial weights, kept identical by averaging.
        self.models = MVAALModels.create(self.config, self.seed, ray.train.torch.get_device())

    def _shard(self, data: Modalities) -> Modalities:
        return data.take(torch.from_numpy(shard_indices(len(data), self.rank, self.world)))

    def run_epoch(self, epoch: int) -> dict[str, float]:
        # Seeded by epoch and rank, so a resumed run draws what the interrupted one would have.
        seed = self.seed * 1_000_003 + epoch * self.world + self.rank
        torch.manual_seed(seed)  # the VAE's reparameterisation noise (this worker's process)
        start = time.perf_counter()
        means = train_mvaal_epoch(
            self.models, self.config, self.labeled, self.unlabeled,
            torch.Generator().manual_seed(seed), average_gradients,
        )  # fmt: skip
        train_seconds = from_rank_zero([time.perf_counter() - start])[0]
        averaged = {name: mean_over_workers(value) for name, value in sorted(means.items())}
        auc = 0.0
        if self.rank == 0:
            auc = discriminator_auc(self.models, self.config, self.all_labeled, self.all_unlabeled)
        auc = from_rank_zero([auc])[0]
        return averaged | {"discriminator_auc": auc, "train_seconds": train_seconds}

    def should_stop(self, epoch: int) -> bool:
        return False  # the paper trains the sampler for a fixed number of epochs

    def state(self) -> dict[str, Any]:
        return {
            "vae": self.models.vae.state_dict(),
            "discriminator": self.models.discriminator.state_dict(),
            "vae_optimizer": self.models.vae_optimizer.state_dict(),
            "discriminator_optimizer": self.models.discriminator_optimizer.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        load_models(self.models, state)


def load_models(models: MVAALModels, state: dict[str, Any]) -> None:
    models.vae.load_state_dict(state["vae"])
    models.discriminator.load_state_dict(state["discriminator"])
    models.vae_optimizer.load_state_dict(state["vae_optimizer"])
    models.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])


def _mvaal_loop(loop_config: dict[str, Any]) -> None:
    program = MVAALProgram(loop_config)
    job = "mvaal" if program.config.multimodal else "vaal"
    run_epochs(program, loop_config["epochs"], job, loop_config["run"])


@dataclass(frozen=True)
class DistributedMVAALResult:
    """The trained sampler (CPU, optimisers included), per-epoch records, and the run."""

    models: MVAALModels
    history: list[dict[str, float]]
    restarts: int
    checkpoint_path: str


def train_mvaal_ray(
    config: MVAALConfig,
    labeled: PairedImageSet,
    unlabeled: PairedImageSet,
    epochs: int,
    run: RayRun,
    seed: int = 0,
) -> DistributedMVAALResult:
    """Train the sampler with ``run.num_workers`` Ray Train workers for ``epochs``."""
    data = checked_modalities(config, labeled, unlabeled, epochs)
    loop_config = {"config": config, "seed": seed, "epochs": epochs, "data": ray.put(data)}
    finished = fit(_mvaal_loop, loop_config, run)
    models = MVAALModels.create(config, seed)
    load_models(models, finished.program)
    return DistributedMVAALResult(
        models, finished.history, finished.restarts, finished.checkpoint_path
    )
