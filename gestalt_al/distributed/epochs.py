"""The per-worker epoch loop that every Ray Train job here shares: resume from the latest
checkpoint, run epochs, report metrics with a checkpoint each epoch, stop when told."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import ray.train
import torch

STATE_FILE = "state.pt"


class EpochProgram(Protocol):
    """What a training job must say: how to run an epoch and how to save and restore itself.

    ``state`` must hold only tensors and plain values (it is read back with
    ``weights_only=True``)."""

    def run_epoch(self, epoch: int) -> dict[str, float]: ...

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...

    def should_stop(self, epoch: int) -> bool: ...


def run_epochs(program: EpochProgram, max_epochs: int, worker_pid_dir: str | None) -> None:
    """Called inside ``train_loop_per_worker``. Rank 0 writes the checkpoint; every rank
    reports (Ray Train needs all of them). ``restarts`` counts resumptions after failures."""
    context = ray.train.get_context()
    rank = context.get_world_rank()
    if worker_pid_dir:  # lets an operator (or the failure test) find the worker processes
        Path(worker_pid_dir, f"rank{rank}.pid").write_text(str(os.getpid()))
    first_epoch, restarts = 1, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            saved = torch.load(Path(directory) / STATE_FILE, weights_only=True)
        program.load(saved["program"])
        first_epoch, restarts = int(saved["epoch"]) + 1, int(saved["restarts"]) + 1
    for epoch in range(first_epoch, max_epochs + 1):
        metrics = program.run_epoch(epoch) | {"epoch": epoch, "restarts": restarts}
        with tempfile.TemporaryDirectory() as directory:
            saved_checkpoint = None
            if rank == 0:
                payload = {"epoch": epoch, "restarts": restarts, "program": program.state()}
                torch.save(payload, Path(directory) / STATE_FILE)
                saved_checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=saved_checkpoint)
        if program.should_stop(epoch):
            break


def read_checkpoint(checkpoint: ray.train.Checkpoint) -> dict[str, Any]:
    """The ``program`` state of a finished run's checkpoint (safe load)."""
    with checkpoint.as_directory() as directory:
        saved: dict[str, Any] = torch.load(Path(directory) / STATE_FILE, weights_only=True)
    return saved
