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
from gestalt_al.data import ImageSet, PairedImageSet, bundled_nih_path, load_dataset
from gestalt_al.distributed.epochs import RayRun
from gestalt_al.distributed.mvaal import train_mvaal_ray
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.distributed.task_model import train_task_model_ray
from gestalt_al.latents import AutoencoderConfig
from gestalt_al.models import ModelConfig
from gestalt_al.mvaal import MVAALConfig
from gestalt_al.service.models import GestaltModel, SamplerModel
from gestalt_al.service.pool import write_pool
from gestalt_al.storage import open_store
from gestalt_al.training import TrainConfig
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
    assert data.labels is not None
    assert validation.labels is not None
    config = ModelConfig(
        "resnet18", data.num_classes, "multi_label", image_size=int(data.images.shape[-1])
    )
    run = RayRun("demo-task-r0000", settings.storage, num_workers=2)
    trained = train_task_model_ray(
        config, data.images[labeled], data.labels[labeled], validation.images,
        validation.labels, TrainConfig(max_epochs=settings.epochs, seed=settings.seed), run,
    )  # fmt: skip
    auc = max(r["val_macro_auc"] for r in trained.history)
    print(f"task model (Ray Train, 2 workers): best validation macro ROC-AUC {auc:.3f}")
    gestalt = GestaltModel.fit(
        trained.model, config, data.images[labeled], "deep_taylor",
        AutoencoderConfig(latent_dim=32, epochs=15, seed=settings.seed),
    )  # fmt: skip
    model_id = gestalt.publish(registry, 0)
    unlabeled = np.setdiff1d(np.arange(len(data)), labeled)
    sampler_config = MVAALConfig(image_size=64, aux_channels=0, width=16, latent_dim=32)
    sampler_run = RayRun("demo-vaal-r0000", settings.storage, num_workers=2)
    sampler = train_mvaal_ray(
        sampler_config, PairedImageSet(data.subset(labeled), None),
        PairedImageSet(data.subset(unlabeled), None), settings.sampler_epochs, sampler_run,
        settings.seed,
    ).models  # fmt: skip
    sampler_id = SamplerModel(sampler_config, sampler.vae, sampler.discriminator).publish(
        registry, 0
    )
    print(f"published {model_id} and {sampler_id}")
    return model_id, sampler_id
