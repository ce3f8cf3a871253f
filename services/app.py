"""Start the service on a Ray cluster: Serve with gRPC ingress, the application, the actor."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import ray
from ray import serve
from ray.serve.config import HTTPOptions, gRPCOptions

from actors.coordinator import COORDINATOR_NAME
from actors.ranking import ACTOR_NAME
from services.api import ActiveLearningAPI
from services.discriminator_scores import DiscriminatorScores
from services.saliency_latents import SaliencyLatents

APP_NAME = "gestalt"
NAMESPACE = "gestalt-al"
SERVICERS = [
    "gestalt_al.v1.active_learning_pb2_grpc.add_ActiveLearningServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]


@dataclass(frozen=True)
class ServiceConfig:
    storage: str  # the service's object store: a folder or s3://bucket/prefix
    grpc_port: int = 50051
    http_port: int = 8000  # Serve's HTTP proxy (unused by the API; health of the proxy)
    latent_replicas: int = 1
    latent_max_replicas: int = 0  # > latent_replicas: autoscale between the two on queue length
    sampler_replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0


def deploy(config: ServiceConfig) -> None:
    """Start Serve's proxies (gRPC with reflection) and run the application; blocks until the
    deployments are healthy. The ranking actor and the loop coordinator are created by the
    ingress on first start."""
    serve.start(
        http_options=HTTPOptions(host="127.0.0.1", port=config.http_port),
        grpc_options=gRPCOptions(
            port=config.grpc_port, grpc_servicer_functions=SERVICERS, enable_reflection=True
        ),
    )
    resources = {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica}
    app = ActiveLearningAPI.bind(  # type: ignore[attr-defined]
        config.storage,
        APP_NAME,
        NAMESPACE,
        SaliencyLatents.options(  # type: ignore[attr-defined]
            **_replicas(config), ray_actor_options=resources
        ).bind(config.storage),
        DiscriminatorScores.options(  # type: ignore[attr-defined]
            num_replicas=config.sampler_replicas,
            ray_actor_options={**resources, "num_cpus": config.cpus_per_replica / 2},
        ).bind(config.storage),
    )
    serve.run(app, name=APP_NAME, route_prefix=f"/{APP_NAME}")


def _replicas(config: ServiceConfig) -> dict[str, object]:
    """A fixed count, or Serve autoscaling when a larger maximum is given."""
    if config.latent_max_replicas <= config.latent_replicas:
        return {"num_replicas": config.latent_replicas}
    return {
        "autoscaling_config": {
            "min_replicas": config.latent_replicas,
            "max_replicas": config.latent_max_replicas,
            "target_ongoing_requests": 8,  # chunks queued per replica before adding one
        }
    }


def shutdown() -> None:
    """Stop the application, the ranking actor and the loop coordinator. Round and loop state
    live in the store, so the next ``deploy`` (with this or another storage) starts fresh
    actors that resume them."""
    serve.shutdown()  # type: ignore[no-untyped-call]
    for name in (COORDINATOR_NAME, ACTOR_NAME):
        with contextlib.suppress(ValueError):  # no actor: nothing to stop
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
