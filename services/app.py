"""Start the service on a Ray cluster: Serve with gRPC ingress, the application, the actor.

The application is assembled in one place, ``app_builder``: Serve's config file
(``deploy/serve_config.yaml``, ``import_path: services.app:app_builder``, used by
``serve run``/``serve deploy`` and KubeRay's RayService) calls it with the config's ``args``,
and ``deploy`` calls it with the same arguments taken from a ``ServiceConfig``."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.serve.config import HTTPOptions, gRPCOptions

from actors.coordinator import COORDINATOR_NAME
from actors.ranking import ACTOR_NAME
from gestalt_al.storage.location import parse_location
from services.api import ActiveLearningAPI
from services.discriminator_scores import DiscriminatorScores
from services.saliency_latents import SaliencyLatents

APP_NAME = "gestalt"
ROUTE_PREFIX = f"/{APP_NAME}"
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
    # JSON of token digests, principals and roles (gestalt_al.service.access); a path on every
    # node (a mounted Secret), never the tokens. Empty: access control off.
    auth_tokens_file: str = ""
    # The gRPC ingress's Serve limits; 0 keeps the deployment's own (64 and 64). Requests its
    # replica runs at once, and requests Serve's proxy holds waiting for one (-1: no bound);
    # past both, calls are refused with RESOURCE_EXHAUSTED (benchmarks/load.py measures both).
    ingress_max_ongoing_requests: int = 0
    ingress_max_queued_requests: int = 0


# Serve's proxies are started once per cluster, before any application: their ports are
# `grpc_options` / `http_options` of a Serve config, never an application's args.
_PROXY_FIELDS = {"grpc_port": "grpc_options.port", "http_port": "http_options.port"}
# The builder's args: every other ServiceConfig field.
APP_ARGS = tuple(f.name for f in dataclasses.fields(ServiceConfig) if f.name not in _PROXY_FIELDS)


def app_builder(args: dict[str, Any]) -> Application:
    """The application (``import_path: services.app:app_builder`` in a Serve config): the gRPC
    ingress bound to the ``SaliencyLatents`` and ``DiscriminatorScores`` deployments.

    ``args``: ``storage`` (required: a folder or ``s3://bucket/prefix``; S3 endpoint and keys
    come from the ``GESTALT_S3_*`` environment variables of every node, never from here) and
    optionally ``latent_replicas``, ``latent_max_replicas``, ``sampler_replicas``,
    ``cpus_per_replica``, ``gpus_per_replica`` (``ServiceConfig``'s meanings and defaults).
    ``auth_tokens_file`` turns on bearer-token access control (``gestalt_al.service.access``).
    ``ingress_max_ongoing_requests`` / ``ingress_max_queued_requests`` (> 0, or -1 for an
    unbounded queue) override the ingress deployment's Serve limits.
    A Serve config's ``deployments:`` entries override the replicas and resources set here.
    Raises ``ValueError`` naming the argument and what to change."""
    config = _config_from_args(args)
    resources = {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica}
    app: Application = ActiveLearningAPI.options(  # type: ignore[attr-defined]
        **_ingress_limits(config)
    ).bind(
        config.storage,
        APP_NAME,  # the scorers and actors find the deployments under this application name
        NAMESPACE,
        config.auth_tokens_file,
        SaliencyLatents.options(  # type: ignore[attr-defined]
            **_replicas(config), ray_actor_options=resources
        ).bind(config.storage),
        DiscriminatorScores.options(  # type: ignore[attr-defined]
            num_replicas=config.sampler_replicas,
            ray_actor_options={**resources, "num_cpus": config.cpus_per_replica / 2},
        ).bind(config.storage),
    )
    return app


def app_args(config: ServiceConfig) -> dict[str, Any]:
    """The builder's args for a ``ServiceConfig`` (its fields without the proxy ports)."""
    return {name: getattr(config, name) for name in APP_ARGS}


def deploy(config: ServiceConfig) -> None:
    """Start Serve's proxies (gRPC with reflection) and run the application; blocks until the
    deployments are healthy. The ranking actor and the loop coordinator are created by the
    ingress on first start."""
    app = app_builder(app_args(config))  # invalid settings fail before Serve starts
    serve.start(
        http_options=HTTPOptions(host="127.0.0.1", port=config.http_port),
        grpc_options=gRPCOptions(
            port=config.grpc_port, grpc_servicer_functions=SERVICERS, enable_reflection=True
        ),
    )
    serve.run(app, name=APP_NAME, route_prefix=ROUTE_PREFIX)


def _config_from_args(args: object) -> ServiceConfig:
    """Validate the builder's args: every problem is a ValueError saying what to change."""
    where = "services.app:app_builder args"
    if not isinstance(args, Mapping):
        raise ValueError(f"{where}: expected a mapping of names to values, got {args!r}")
    for name in args:
        if name in _PROXY_FIELDS:
            raise ValueError(
                f"{where}: {name!r} is a setting of Serve's proxy, not of the application: "
                f"set {_PROXY_FIELDS[name]} in the Serve config (or ServiceConfig.{name})"
            )
    unknown = sorted(str(name) for name in args if name not in APP_ARGS)
    if unknown:
        raise ValueError(f"{where}: unknown {unknown}; the known args are {list(APP_ARGS)}")
    storage = args.get("storage")
    if not isinstance(storage, str) or not storage.strip():
        raise ValueError(
            f"{where}: 'storage' is required: the service's object store, a folder or "
            "s3://bucket/prefix (the S3 endpoint and keys come from the GESTALT_S3_* "
            f"environment variables, never from args); got {storage!r}"
        )
    try:
        parse_location(storage)
    except ValueError as error:
        raise ValueError(f"{where}: 'storage': {error}") from None
    values: dict[str, Any] = {"storage": storage}
    tokens = args.get("auth_tokens_file", "")
    if not isinstance(tokens, str):
        raise ValueError(f"{where}: 'auth_tokens_file' must be a path (a string), got {tokens!r}")
    values["auth_tokens_file"] = tokens
    minimum = {"latent_replicas": 1, "sampler_replicas": 1, "latent_max_replicas": 0,
               "ingress_max_ongoing_requests": 0, "ingress_max_queued_requests": -1}  # fmt: skip
    for name, lowest in minimum.items():
        if name in args:
            value = args[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{where}: {name!r} must be an integer >= {lowest}, got {value!r}")
            values[name] = value
    for name in ("cpus_per_replica", "gpus_per_replica"):
        if name in args:
            value = args[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{where}: {name!r} must be a number >= 0, got {value!r}")
            values[name] = float(value)
    return ServiceConfig(**values)


def _ingress_limits(config: ServiceConfig) -> dict[str, int]:
    """The ingress's Serve options that were set (0: the deployment's own)."""
    limits = {
        "max_ongoing_requests": config.ingress_max_ongoing_requests,
        "max_queued_requests": config.ingress_max_queued_requests,
    }
    return {name: value for name, value in limits.items() if value}


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
