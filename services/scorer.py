"""What both scoring deployments share: registry models per request (multiplexed, so a
replica keeps recent versions loaded) and ``@serve.batch`` batching of image chunks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import ray
import torch
from ray import serve

from gestalt_al.distributed.registry import ModelRegistry
from services import metrics


class Scorer(Protocol):
    def to(self, device: torch.device) -> Scorer: ...

    def score(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


class BatchedScorer:
    """Call with one chunk of images ``[b, ...]`` and ``multiplexed_model_id`` set on the
    handle; returns the model's arrays for that chunk. Concurrent chunks are scored together."""

    name = ""
    load: Callable[[ModelRegistry, str], Scorer]

    def __init__(self, storage: str) -> None:
        self.registry = ModelRegistry(storage)
        # Only a replica that reserved a GPU (num_gpus > 0) uses one: a visible but
        # unreserved GPU belongs to someone else's work.
        self.device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")

    @serve.multiplexed(max_num_models_per_replica=2)
    async def model(self, model_id: str) -> Scorer:
        model = await asyncio.to_thread(type(self).load, self.registry, model_id)
        return model.to(self.device)

    async def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        scored: dict[str, np.ndarray] = await self.batch(  # type: ignore[call-arg, misc]
            serve.get_multiplexed_model_id(), images
        )
        return scored

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)  # type: ignore[arg-type]
    async def batch(  # type: ignore[misc]
        self, model_ids: list[str], chunks: list[np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        """Chunks of one model version and image shape go through the model as one batch."""
        results: list[dict[str, np.ndarray]] = [{} for _ in chunks]
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for i, (model_id, chunk) in enumerate(zip(model_ids, chunks, strict=True)):
            groups.setdefault((model_id, chunk.shape[1:]), []).append(i)
        for (model_id, _), members in groups.items():
            model = await self.model(model_id)
            started = time.perf_counter()
            images = np.concatenate([chunks[i] for i in members])
            scored = await asyncio.to_thread(model.score, images)
            metrics.scoring_latency().observe(
                time.perf_counter() - started, {"deployment": self.name}
            )
            metrics.samples_scored().inc(len(images), {"deployment": self.name})
            bounds = np.cumsum([len(chunks[i]) for i in members])[:-1]
            for name, values in scored.items():
                for i, part in zip(members, np.split(values, bounds), strict=True):
                    results[i][name] = part
        return results

    def ready(self) -> bool:
        """For the ingress's health check: the replica is up and answering."""
        return True
