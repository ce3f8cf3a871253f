"""Task-model training under Ray Train: data-parallel workers (DDP over gloo on CPUs, NCCL on
GPUs), each on its own shard, with the single-process loop's epoch step and early stopping."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from torch import nn

from gestalt_al.distributed.collectives import from_rank_zero, mean_over_workers, shard_indices
from gestalt_al.distributed.epochs import RayRun, fit, run_epochs
from gestalt_al.models import ModelConfig, build_model
from gestalt_al.training import (
    TrainConfig,
    checked_training_data,
    evaluate,
    make_optimizer,
    train_one_epoch,
)


class TaskProgram:
    """One worker's share of training the task model."""

    def __init__(self, loop_config: dict[str, Any]) -> None:
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.config = ModelConfig.from_dict(loop_config["model"])
        self.settings: TrainConfig = loop_config["settings"]
        train_x, train_y, self.val_x, self.val_y = ray.get(loop_config["data"])
        mine = torch.from_numpy(shard_indices(len(train_x), self.rank, self.world))
        self.train_x, self.train_y = train_x[mine], train_y[mine]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            self.module = build_model(self.config)
        self.model = ray.train.torch.prepare_model(self.module)
        self.optimizer = make_optimizer(self.module, self.settings)
        self.best_auc, self.best_epoch = -math.inf, 0
        self.best_state = _copy(self.module)

    def run_epoch(self, epoch: int) -> dict[str, float]:
        # Seeded by epoch and rank, so a resumed run draws what the interrupted one would have:
        # the generator for batches and augmentation, the worker's global one for dropout.
        seed = self.settings.seed * 1_000_003 + epoch * self.world + self.rank
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        loss = train_one_epoch(
            self.model, self.optimizer, self.train_x, self.train_y, self.config, self.settings,
            generator,
        )  # fmt: skip
        train_seconds = from_rank_zero([time.perf_counter() - start])[0]
        metrics = evaluate(self.module, self.val_x, self.val_y.numpy(), self.config)
        # Rank 0's numbers decide for everyone, so all workers stop at the same epoch.
        loss, auc = from_rank_zero([mean_over_workers(loss), metrics.macro_auc])
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training diverged in epoch {epoch} (mean loss {loss}); lower the learning rate"
            )
        if auc > self.best_auc:
            self.best_auc, self.best_epoch, self.best_state = auc, epoch, _copy(self.module)
        return {"train_loss": loss, "val_macro_auc": auc, "train_seconds": train_seconds}

    def should_stop(self, epoch: int) -> bool:
        return epoch - self.best_epoch >= self.settings.patience

    def state(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": self.best_state,
            "best_auc": self.best_auc,
            "best_epoch": self.best_epoch,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_state, self.best_auc = state["best_state"], float(state["best_auc"])
        self.best_epoch = int(state["best_epoch"])


def _copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}


def _task_loop(loop_config: dict[str, Any]) -> None:
    program = TaskProgram(loop_config)
    run_epochs(program, program.settings.max_epochs, "task_model", loop_config["run"])


@dataclass(frozen=True)
class DistributedTrainResult:
    """The best-validation model (eval mode, CPU), per-epoch records, and where the run lives."""

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    restarts: int
    checkpoint_path: str


def train_task_model_ray(
    config: ModelConfig,
    train_images: np.ndarray | torch.Tensor,
    train_labels: np.ndarray,
    val_images: np.ndarray | torch.Tensor,
    val_labels: np.ndarray,
    train_config: TrainConfig | None,
    run: RayRun,
) -> DistributedTrainResult:
    """Train with ``run.num_workers`` Ray Train workers; a worker lost mid-run costs at most
    one epoch, and the data is checked before any worker starts."""
    settings = train_config or TrainConfig()
    data = checked_training_data(
        config, settings, train_images, train_labels, val_images, val_labels
    )
    loop_config = {"model": config.to_dict(), "settings": settings, "data": ray.put(data)}
    finished = fit(_task_loop, loop_config, run)
    model = build_model(config)
    model.load_state_dict(finished.program["best_state"])
    return DistributedTrainResult(
        model=model.eval(),
        history=finished.history,
        best_epoch=int(finished.program["best_epoch"]),
        restarts=finished.restarts,
        checkpoint_path=finished.checkpoint_path,
    )
