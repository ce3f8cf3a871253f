"""Ray Data scoring of a pool: one row per pending shard -> read its images from the pool's
store -> chunks to the Serve deployments -> per-shard results written to the service store.

Writing a shard's results is idempotent (same keys, whole-object writes), so a shard that is
scored twice after a failure leaves the same objects behind. Scoring is a pure function of the
model version and the images, so a chunk whose replica died is simply sent again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayActorError

from gestalt_al.service.pool import PoolManifest, ShardInfo, check_shard_ids, read_shard
from gestalt_al.service.shard_results import RoundResults, ShardScores
from gestalt_al.storage import open_store

STAGES = ("read", "score", "write")
CHUNK = 32  # images per Serve request; @serve.batch groups several requests
# A chunk whose replica died (killed, OOM, node lost) is sent again this many times; Serve
# routes it to a live replica or holds it until the controller has replaced the dead one.
REPLICA_RETRIES = 3


def result_name(start: int) -> str:
    """Results are named by the shard's first pool index: unique, and sorted = pool order."""
    return f"{start:012d}"


def score_shards(
    manifest: PoolManifest,
    shards: list[ShardInfo],
    expected_ids: np.ndarray,
    app_name: str,
    model_id: str,
    sampler_model_id: str,
    storage: str,
    results_prefix: str,
) -> Iterator[tuple[str, dict[str, float]]]:
    """Score ``shards`` with Ray Data; yields each shard's result name and its seconds spent
    reading, scoring and writing, as shards complete."""
    rows = [
        {"key": s.key, "start": s.start, "ids": expected_ids[s.start : s.start + s.count]}
        for s in shards
    ]
    # A shard's error reaches the caller as itself (a StoreUnavailableError, a ValueError
    # naming the shard), not as Ray Data's UserCodeException, whose cause is lost on the way
    # out of the task: the ranking actor picks the round's state and message by its type.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows))).map(
        _score_row,  # type: ignore[arg-type]  # the keyword arguments come from fn_kwargs
        fn_kwargs={
            "pool_uri": manifest.uri,
            "app_name": app_name,
            "model_id": model_id,
            "sampler_model_id": sampler_model_id,
            "storage": storage,
            "results_prefix": results_prefix,
        },
        num_cpus=0.25,  # the task mostly waits on Serve; leave the CPUs to the replicas
        max_retries=3,
    )
    for row in dataset.iter_rows():
        yield str(row["name"]), {stage: float(row[stage]) for stage in STAGES}


def _score_row(
    row: dict[str, Any],
    pool_uri: str,
    app_name: str,
    model_id: str,
    sampler_model_id: str,
    storage: str,
    results_prefix: str,
) -> dict[str, Any]:
    source = f"{pool_uri}/{row['key']}"
    started = time.perf_counter()
    shard = read_shard(open_store(pool_uri).get(row["key"]), source)
    read = time.perf_counter()
    check_shard_ids(shard, row["ids"], source)
    latents = _score(app_name, "SaliencyLatents", model_id, shard.images)
    sampler = (
        _score(app_name, "DiscriminatorScores", sampler_model_id, shard.images)
        if sampler_model_id
        else {}
    )
    scored = time.perf_counter()
    start = int(row["start"])
    name = result_name(start)
    RoundResults(open_store(storage), results_prefix).write(
        name,
        ShardScores(
            indices=np.arange(start, start + len(shard.ids), dtype=np.int64),
            latents=latents["latents"],
            uncertainty=latents["uncertainty"],
            sampler_scores=sampler.get("sampler_scores"),
        ),
    )
    seconds = {
        "read": read - started,
        "score": scored - read,
        "write": time.perf_counter() - scored,
    }
    return {"name": name, **seconds}


def _score(app_name: str, deployment: str, model_id: str, images: np.ndarray) -> dict[str, Any]:
    """Send every chunk before waiting on any, so the replica can batch them."""
    handle = serve.get_deployment_handle(deployment, app_name).options(
        multiplexed_model_id=model_id
    )
    chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
    responses = [handle.remote(chunk) for chunk in chunks]

    def result(index: int) -> dict[str, Any]:
        """The chunk's scores; sent again when the replica that held it died."""
        for _ in range(REPLICA_RETRIES):
            try:
                scored: dict[str, Any] = responses[index].result()
                return scored
            except RayActorError:  # the replica died or is unreachable; scoring is pure
                responses[index] = handle.remote(chunks[index])
        try:
            last: dict[str, Any] = responses[index].result()
        except RayActorError as exc:  # one line, not Ray's traceback (it reaches the client)
            raise RuntimeError(
                f"{deployment} replicas kept dying while scoring ({REPLICA_RETRIES + 1} "
                f"attempts, last: {type(exc).__name__})"
            ) from None
        return last

    parts = [result(index) for index in range(len(chunks))]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
