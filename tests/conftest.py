"""Shared test settings: hypothesis profile sized for the 2-core CI machine."""

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings

from tests.servers import S3Endpoint, free_port, moto_server

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci")


@dataclass(frozen=True)
class RayCluster:
    metrics_url: str  # Ray's Prometheus export of this node's metrics


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One local Ray cluster for the whole session (starting one takes about 8 s)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _metrics_export_port=port)
    yield RayCluster(f"http://127.0.0.1:{port}/metrics")
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A real S3 server process on loopback (see ``moto_server`` for which and why)."""
    with moto_server() as endpoint:
        yield endpoint
