"""The epoch loop and the trainer that every Ray Train job here shares: resume from the
latest checkpoint, run epochs, report metrics with a checkpoint each epoch, stop when told."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ray.train
import ray.train.torch
import torch

from gestalt_al.distributed.metrics import TrainingMetrics
from gestalt_al.distributed.storage import checkpoint_storage

STATE_FILE = "state.pt"


class EpochProgram(Protocol):
    """What a training job must say: how to run an epoch and how to save and restore itself.

    ``state`` must hold only tensors and plain values (it is read back with
    ``weights_only=True``)."""

    def run_epoch(self, epoch: int) -> dict[str, float]: ...

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...

    def should_stop(self, epoch: int) -> bool: ...


@dataclass(frozen=True)
class RayRun:
    """Where and how a training run executes. Running again with the same ``name`` and
    ``storage`` (a folder or ``s3://bucket/prefix``) resumes from its last checkpoint."""

    name: str
    storage: str
    num_workers: int = 2
    use_gpu: bool = False
    max_failures: int = 2
    worker_pid_dir: str | None = None  # each rank writes its pid here (operators, tests)
    # None: Ray Train's default (1 CPU, none with a GPU); below 1 shares CPUs with Serve replicas
    cpus_per_worker: float | None = None


@dataclass(frozen=True)
class FinishedRun:
    """The last checkpoint's contents: the program state, per-epoch records and restarts."""

    program: dict[str, Any]
    history: list[dict[str, float]]
    restarts: int
    checkpoint_path: str


def run_epochs(program: EpochProgram, max_epochs: int, job: str, run: RayRun) -> None:
    """Called inside ``train_loop_per_worker``. Rank 0 writes the checkpoint and the
    Prometheus metrics; every rank reports (Ray Train needs all of them)."""
    rank = ray.train.get_context().get_world_rank()
    if run.worker_pid_dir:
        Path(run.worker_pid_dir, f"rank{rank}.pid").write_text(str(os.getpid()))
    first_epoch, restarts, history = 1, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        saved = read_checkpoint(checkpoint)
        program.load(saved.program)
        first_epoch, restarts = len(saved.history) + 1, saved.restarts + 1
        history = saved.history
        if program.should_stop(len(history)):  # the run had already stopped early
            return
    metrics = TrainingMetrics(job, run.name) if rank == 0 else None
    for epoch in range(first_epoch, max_epochs + 1):
        start = time.perf_counter()
        values = program.run_epoch(epoch)
        seconds = time.perf_counter() - start
        record = values | {"epoch": float(epoch), "epoch_seconds": seconds}
        history.append(record)
        with tempfile.TemporaryDirectory() as directory:
            saved_checkpoint = None
            if metrics is not None:
                metrics.record(values, seconds)
                payload = {"restarts": restarts, "history": history, "program": program.state()}
                torch.save(payload, Path(directory) / STATE_FILE)
                saved_checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(record | {"restarts": restarts}, checkpoint=saved_checkpoint)
        if program.should_stop(epoch):
            break


def read_checkpoint(checkpoint: ray.train.Checkpoint) -> FinishedRun:
    """A checkpoint's contents, loaded without pickle."""
    with checkpoint.as_directory() as directory:
        saved = torch.load(Path(directory) / STATE_FILE, weights_only=True)
    return FinishedRun(
        program=saved["program"],
        history=[dict(record) for record in saved["history"]],
        restarts=int(saved["restarts"]),
        checkpoint_path=checkpoint.path,
    )


def fit(
    loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], run: RayRun
) -> FinishedRun:
    """Run ``loop`` on ``run.num_workers`` Ray Train workers with checkpoints in storage."""
    storage_path, filesystem = checkpoint_storage(run.storage)
    trainer = ray.train.torch.TorchTrainer(
        loop,
        train_loop_config=loop_config | {"run": run},
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.num_workers,
            use_gpu=run.use_gpu,
            resources_per_worker=(
                None if run.cpus_per_worker is None else {"CPU": run.cpus_per_worker}
            ),
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run.name!r} finished without a checkpoint")
    return read_checkpoint(result.checkpoint)
