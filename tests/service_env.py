"""A deployed ranking service for the end-to-end tests: a small real NIH pool in shards, a
quickly trained task model with its map autoencoder, a VAAL sampler, and the Serve app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gestalt_al.client import ServiceClient
from gestalt_al.data import bundled_nih_path, load_dataset
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.latents import AutoencoderConfig
from gestalt_al.models import ModelConfig
from gestalt_al.mvaal import MVAALConfig
from gestalt_al.mvaal.train import MVAALModels
from gestalt_al.service.models import GestaltModel, SamplerModel
from gestalt_al.service.pool import write_pool
from gestalt_al.storage.store import LocalStore
from gestalt_al.training import TrainConfig, train_task_model
from tests.servers import free_port

if TYPE_CHECKING:
    from services.app import ServiceConfig

POOL_SIZE, SHARD_SIZE, LABELED = 128, 16, 24


@dataclass(frozen=True)
class ServiceEnv:
    client: ServiceClient
    storage: Path
    pool_uri: str
    ids: np.ndarray
    labels: np.ndarray  # [N, K] ground truth (the tests' oracle)
    model_id: str
    sampler_id: str
    grpc_target: str
    config: ServiceConfig

    def redeploy(self) -> None:
        """Deploy the service again with the same storage and ports, as an operator does after
        a cluster restart."""
        from services.app import deploy

        deploy(self.config)


def start_service(root: Path, auth_tokens_file: str = "") -> ServiceEnv:
    """``auth_tokens_file``: turn access control on (``client`` then has no token)."""
    from services.app import ServiceConfig, deploy

    data = load_dataset(bundled_nih_path(), "train", "images_64")
    assert data.labels is not None
    ids, images, labels = data.ids[:POOL_SIZE], data.images[:POOL_SIZE], data.labels[:POOL_SIZE]
    pool_uri = str(root / "pool")
    write_pool(LocalStore(pool_uri), "", list(ids), images, data.label_names, SHARD_SIZE)
    config = ModelConfig("resnet18", data.num_classes, "multi_label", image_size=32)
    trained = train_task_model(
        config, images[:LABELED], labels[:LABELED], images[LABELED:40], labels[LABELED:40],
        TrainConfig(max_epochs=1), show_progress=False,
    )  # fmt: skip
    registry = ModelRegistry(str(root / "service"))
    gestalt = GestaltModel.fit(
        trained.model, config, images[:LABELED], "deep_taylor",
        AutoencoderConfig(latent_dim=8, epochs=2), progress=False,
    )  # fmt: skip
    sampler_config = MVAALConfig(image_size=32, aux_channels=0, width=4, latent_dim=8)
    untrained = MVAALModels.create(sampler_config)  # scores only need to be deterministic
    sampler = SamplerModel(sampler_config, untrained.vae, untrained.discriminator)
    port = free_port()
    service_config = ServiceConfig(str(root / "service"), grpc_port=port, http_port=free_port(),
                                   latent_max_replicas=2, cpus_per_replica=0.5,
                                   auth_tokens_file=auth_tokens_file)  # fmt: skip
    deploy(service_config)
    return ServiceEnv(
        client=ServiceClient(f"127.0.0.1:{port}"),
        storage=root / "service",
        pool_uri=pool_uri,
        ids=ids,
        labels=labels,
        model_id=gestalt.publish(registry, 0),
        sampler_id=sampler.publish(registry, 0),
        grpc_target=f"127.0.0.1:{port}",
        config=service_config,
    )
