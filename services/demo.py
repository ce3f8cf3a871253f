"""The main command: one full AL round through the service on the bundled NIH sample.

Local Ray cluster -> task model trained with Ray Train on an initial labeled set -> map
autoencoder -> VAAL sampler trained with Ray Train -> both published -> Serve application
with gRPC ingress -> pool registered by reference -> round -> the top-b selections printed
by a gRPC client -> clean shutdown.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import ray

from gestalt_al.client import ServiceClient
from gestalt_al.data import ImageSet, bundled_nih_path, load_dataset
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.distributed.retrain import RoundData, retrain_and_publish
from gestalt_al.service.loop_config import ModelSettings
from gestalt_al.service.pool import write_pool
from gestalt_al.storage import open_store
from services.app import APP_NAME, ServiceConfig, deploy, shutdown

SHOWN = ("gestalt_node", "gestalt_edge", "gestalt_weighted_node", "vaal", "hybrid")


@dataclass(frozen=True)
class DemoSettings:
    storage: str
    initial_labeled: int = 100
    budget: int = 10
    epochs: int = 6
    sampler_epochs: int = 6
    grpc_port: int = 50051
    http_port: int = 8000
    seed: int = 0


def run_demo(args: argparse.Namespace) -> int:
    settings = DemoSettings(
        args.storage, args.initial_labeled, args.budget, args.epochs, args.sampler_epochs,
        args.grpc_port, args.http_port, args.seed,
    )  # fmt: skip
    data = load_dataset(args.data or bundled_nih_path(), "train", args.images_key)
    validation = load_dataset(args.data or bundled_nih_path(), "val", args.images_key)
    if data.labels is None or validation.labels is None:
        raise ValueError(f"{data.source}: the demo needs labels for its labeled set")
    if not 2 <= settings.initial_labeled < len(data) - settings.budget:
        raise ValueError(f"--initial-labeled must be in 2..{len(data) - settings.budget - 1}")
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        return _round(settings, data, validation, started)
    finally:
        shutdown()
        ray.shutdown()


def _round(settings: DemoSettings, data: ImageSet, validation: ImageSet, started: float) -> int:
    assert data.labels is not None  # checked by run_demo
    order = np.random.default_rng(settings.seed).permutation(len(data))
    labeled = np.sort(order[: settings.initial_labeled])
    registry = ModelRegistry(settings.storage)
    model_id, sampler_id = _publish_models(settings, data, validation, labeled, registry)
    pool_uri = f"{settings.storage.rstrip('/')}/pool-data/nih"
    write_pool(open_store(pool_uri), "", list(data.ids), data.images, data.label_names, 128)
    deploy(ServiceConfig(settings.storage, settings.grpc_port, settings.http_port))
    client = ServiceClient(f"127.0.0.1:{settings.grpc_port}", APP_NAME)
    pool = client.register_pool("nih", pool_uri)
    print(f"pool 'nih': {pool.num_samples} images in {pool.num_shards} shards at {pool.uri}")
    labels = [(str(data.ids[i]), data.labels[i].astype(float).tolist()) for i in labeled]
    submitted = client.submit_labels("nih", labels, submitter="demo")
    print(f"labeled set: {submitted.num_labeled} samples")
    round_id = client.start_round("nih", model_id, sampler_id).round_id
    finished = client.wait_round(round_id)
    if finished.message:
        raise RuntimeError(f"round {round_id} failed: {finished.message}")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in sorted(finished.stage_seconds.items()))
    print(f"round {round_id}: {finished.num_candidates} candidates ranked; seconds: {stages}")
    for strategy in SHOWN:
        print(f"\n{strategy}: top {settings.budget}")
        for sample in client.selection(round_id, strategy, settings.budget):
            row = int(np.flatnonzero(data.ids == sample.sample_id)[0])
            findings = ", ".join(data.findings(row)) or "No Finding"
            print(f"{sample.rank:>4}  {sample.sample_id:<22} {sample.score:10.4f}  {findings}")
    client.close()
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    return 0


def _publish_models(
    settings: DemoSettings,
    data: ImageSet,
    validation: ImageSet,
    labeled: np.ndarray,
    registry: ModelRegistry,
) -> tuple[str, str]:
    unlabeled = np.setdiff1d(np.arange(len(data)), labeled)
    retrained = retrain_and_publish(
        RoundData(data.subset(labeled), data.subset(unlabeled), validation),
        ModelSettings(epochs=settings.epochs, sampler_epochs=settings.sampler_epochs),
        registry, publish_round=0, runs=settings.storage, run_name="demo-r0000",
        seed=settings.seed,
    )  # fmt: skip
    auc = max(r["val_macro_auc"] for r in retrained.task.history)
    print(f"task model (Ray Train, 2 workers): best validation macro ROC-AUC {auc:.3f}")
    print(f"published {retrained.model_id} and {retrained.sampler_id}")
    return retrained.model_id, retrained.sampler_id
