"""Shared test settings: hypothesis profile sized for the 2-core CI machine."""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.servers import S3Endpoint, free_port, moto_server

REPO = Path(__file__).resolve().parent.parent  # the repository root the tests read files from
SHARED_DATA = REPO.parent / "shared" / "data"  # the real data sets beside the clone

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci")


@dataclass(frozen=True)
class RayCluster:
    metrics_port: int

    @property
    def metrics_url(self) -> str:
        """Ray's Prometheus export of this node's metrics."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        import ray

        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False,
            _metrics_export_port=self.metrics_port,
        )  # fmt: skip

    def restart(self) -> None:
        """Stop every process of the cluster (detached actors, Serve, GCS: nothing survives,
        as in a restart of a whole cluster) and start an empty one with the same settings."""
        import ray

        ray.shutdown()
        try:
            self.start()
        except RuntimeError:
            # Seen twice in four runs on 2 loaded CPUs: right after a shutdown the new GCS
            # never writes its port file ("Timed out waiting for file ...gcs_server_port"),
            # while the next attempt starts normally.
            ray.shutdown()
            self.start()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One local Ray cluster for the whole session (starting one takes about 8 s)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    cluster = RayCluster(free_port())
    cluster.start()
    yield cluster
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A real S3 server process on loopback (see ``moto_server`` for which and why)."""
    with moto_server() as endpoint:
        yield endpoint
