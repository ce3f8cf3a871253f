"""What data-parallel workers agree on: their shard of the data, shared numbers, and averaged
gradients. Each works unchanged in a single process (no process group)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def shard_indices(num_samples: int, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s samples: every ``world``-th, padded by wrapping so every shard has the
    same length (every worker must run the same number of steps, or collectives hang)."""
    per_worker = math.ceil(num_samples / world)
    padded = np.arange(per_worker * world) % num_samples
    return padded[rank::world]


def _device() -> torch.device:
    """NCCL moves only CUDA tensors; gloo takes CPU ones."""
    return torch.device("cuda" if dist.get_backend() == "nccl" else "cpu")


def mean_over_workers(value: float) -> float:
    if not dist.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()


def from_rank_zero(values: list[float]) -> list[float]:
    """Rank 0's numbers on every rank, so that decisions (early stopping) agree."""
    if not dist.is_initialized():
        return values
    shared = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.broadcast(shared, src=0)
    return [float(value) for value in shared.tolist()]


def average_gradients(module: nn.Module) -> None:
    """All-reduce and average ``.grad`` between backward and step: DDP's effect, for losses
    DDP cannot wrap (the gradient penalty differentiates D twice)."""
    if not dist.is_initialized():
        return
    gradients = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([gradient.reshape(-1) for gradient in gradients])  # one collective
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for gradient in gradients:
        gradient.copy_(flat[offset : offset + gradient.numel()].view_as(gradient))
        offset += gradient.numel()
