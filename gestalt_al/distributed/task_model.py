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

from gestalt_al.distributed.epochs import read_checkpoint, run_epochs
from gestalt_al.distributed.storage import checkpoint_storage
from gestalt_al.models import ModelConfig, build_model
from gestalt_al.training import (
    TrainConfig,
    checked_training_data,
    evaluate,
    make_optimizer,
    train_one_epoch,
)


def shard_indices(num_samples: int, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s samples: every ``world``-th, padded by wrapping so every shard has the
    same length (DDP needs the same number of batches on every worker)."""
    per_worker = math.ceil(num_samples / world)
    padded = np.arange(per_worker * world) % num_samples
    return padded[rank::world]


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
        self.history: list[dict[str, float]] = []

    def run_epoch(self, epoch: int) -> dict[str, float]:
        start = time.perf_counter()
        # Seeded by epoch and rank, so a resumed run draws what the interrupted one would have.
        generator = torch.Generator().manual_seed(
            self.settings.seed * 1_000_003 + epoch * self.world + self.rank
        )
        loss = train_one_epoch(
            self.model, self.optimizer, self.train_x, self.train_y, self.config, self.settings,
            generator,
        )  # fmt: skip
        metrics = evaluate(self.module, self.val_x, self.val_y.numpy(), self.config)
        # Rank 0's numbers decide for everyone, so all workers stop at the same epoch.
        loss, auc = _from_rank_zero([_mean_over_workers(loss), metrics.macro_auc])
        if auc > self.best_auc:
            self.best_auc, self.best_epoch, self.best_state = auc, epoch, _copy(self.module)
        record = {
            "epoch": float(epoch),
            "train_loss": loss,
            "val_macro_auc": auc,
            "epoch_seconds": time.perf_counter() - start,
        }
        self.history.append(record)
        return record

    def should_stop(self, epoch: int) -> bool:
        return epoch - self.best_epoch >= self.settings.patience

    def state(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": self.best_state,
            "best_auc": self.best_auc,
            "best_epoch": self.best_epoch,
            "history": self.history,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_state, self.best_auc = state["best_state"], float(state["best_auc"])
        self.best_epoch, self.history = int(state["best_epoch"]), list(state["history"])


def _copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _mean_over_workers(value: float) -> float:
    if not torch.distributed.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return float(total) / torch.distributed.get_world_size()


def _from_rank_zero(values: list[float]) -> list[float]:
    if not torch.distributed.is_initialized():
        return values
    shared = torch.tensor(values, dtype=torch.float64)
    torch.distributed.broadcast(shared, src=0)
    return shared.tolist()


def _task_loop(loop_config: dict[str, Any]) -> None:
    program = TaskProgram(loop_config)
    run_epochs(program, program.settings.max_epochs, loop_config.get("worker_pid_dir"))


@dataclass(frozen=True)
class DistributedTrainResult:
    """The best-validation model (eval mode), per-epoch records, and where the run lives."""

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
    train_config: TrainConfig | None = None,
    *,
    run_name: str,
    storage: str,
    num_workers: int = 2,
    use_gpu: bool = False,
    max_failures: int = 2,
    worker_pid_dir: str | None = None,
) -> DistributedTrainResult:
    """Train with ``num_workers`` Ray Train workers; checkpoints go to ``storage`` (a folder or
    ``s3://bucket/prefix``) under ``run_name``. Running again with the same name and storage
    resumes from the last checkpoint; a worker lost mid-run costs at most one epoch."""
    settings = train_config or TrainConfig()
    data = checked_training_data(
        config, settings, train_images, train_labels, val_images, val_labels
    )
    storage_path, filesystem = checkpoint_storage(storage)
    trainer = ray.train.torch.TorchTrainer(
        _task_loop,
        train_loop_config={
            "model": config.to_dict(),
            "settings": settings,
            "data": ray.put(data),
            "worker_pid_dir": worker_pid_dir,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name!r} finished without a checkpoint")
    saved = read_checkpoint(result.checkpoint)
    model = build_model(config)
    model.load_state_dict(saved["program"]["best_state"])
    return DistributedTrainResult(
        model=model.eval(),
        history=list(saved["program"]["history"]),
        best_epoch=int(saved["program"]["best_epoch"]),
        restarts=int(saved["restarts"]),
        checkpoint_path=result.checkpoint.path,
    )
