"""End to end through the real gRPC port: Serve's proxy -> ingress -> ranking actor -> Ray
Data -> Serve scorers -> object store, on a real NIH pool."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import ray
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from actors.ranking import ACTOR_NAME
from gestalt_al.ranking import gestalt_scores, select_top
from gestalt_al.service.rounds import RoundBook
from gestalt_al.service.shard_results import index_latents
from gestalt_al.storage.store import LocalStore
from gestalt_al.v1 import active_learning_pb2 as pb
from services.app import NAMESPACE
from tests.conftest import REPO, RayCluster
from tests.servers import free_port, wait_for_port
from tests.service_env import LABELED, POOL_SIZE, SHARD_SIZE, ServiceEnv, start_service

DONE = pb.ROUND_STATE_DONE


@pytest.fixture(scope="module")
def service(
    ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceEnv]:
    from services.app import shutdown

    env = start_service(tmp_path_factory.mktemp("service"))
    pool = env.client.register_pool("nih", env.pool_uri)
    assert (pool.num_samples, pool.num_shards) == (POOL_SIZE, POOL_SIZE // SHARD_SIZE)
    env.client.submit_labels("nih", _labels(env, range(LABELED)), submitter="test")
    yield env
    env.client.close()
    shutdown()


def _labels(env: ServiceEnv, rows: Any) -> list[tuple[str, list[float]]]:
    return [(str(env.ids[i]), env.labels[i].astype(float).tolist()) for i in rows]


def _round(env: ServiceEnv) -> pb.Round:
    started = env.client.start_round("nih", env.model_id, env.sampler_id)
    return env.client.wait_round(started.round_id, timeout=600, progress=False)


def _stored_latents(env: ServiceEnv, round_id: str) -> np.ndarray:
    book = RoundBook(LocalStore(env.storage))
    results = book.results(book.load(round_id))
    parts = [index_latents(results.index(name), 14) for name in sorted(results.done())]
    assert np.concatenate([ids for ids, _ in parts]).tolist() == list(range(POOL_SIZE))
    return np.concatenate([latents for _, latents in parts])


def test_a_round_ranks_the_whole_pool_like_the_single_array_ranking(service: ServiceEnv) -> None:
    finished = _round(service)
    assert finished.state == DONE, finished.message
    assert (finished.shards_done, finished.num_labeled) == (POOL_SIZE // SHARD_SIZE, LABELED)
    assert finished.num_candidates == POOL_SIZE - LABELED
    assert {"read", "score", "write", "ranking"} <= set(finished.stage_seconds)
    latents = _stored_latents(service, finished.round_id)
    candidates = np.arange(LABELED, POOL_SIZE)
    for strategy, variant in [("gestalt_node", "node"), ("gestalt_edge", "edge"),
                              ("gestalt_weighted_node", "weighted_node")]:  # fmt: skip
        expected = gestalt_scores(latents[candidates], variant, latents[:LABELED])
        top = select_top(expected, candidates, 20)
        chosen = service.client.selection(finished.round_id, strategy, 20, page_size=7)
        assert [s.sample_id for s in chosen] == [str(service.ids[i]) for i in
                                                 candidates[top.indices]]  # fmt: skip
        np.testing.assert_allclose([s.score for s in chosen], top.scores, rtol=0, atol=0)
        assert [s.rank for s in chosen] == list(range(1, 21))
    streamed = list(service.client.stream_selection(finished.round_id, "vaal", 30))
    assert [s.sample_id for s in streamed] == [
        s.sample_id for s in service.client.selection(finished.round_id, "vaal", 30)
    ]
    labeled_ids = {str(i) for i in service.ids[:LABELED]}
    for strategy in finished.strategies:
        chosen_ids = {
            s.sample_id for s in service.client.selection(finished.round_id, strategy, 50)
        }
        assert len(chosen_ids) == 50
        assert not chosen_ids & labeled_ids, strategy
    assert set(finished.strategies) == {"gestalt_node", "gestalt_edge", "gestalt_weighted_node",
                                        "vaal", "hybrid", "random", "uncertainty"}  # fmt: skip
    # Nearest neighbours in latent space agree with a brute-force search.
    query = 50
    neighbours = service.client.neighbours(finished.round_id, str(service.ids[query]), 5)
    flat = latents.reshape(POOL_SIZE, -1).astype(np.float64)
    distances = ((flat - flat[query]) ** 2).sum(axis=1)
    distances[query] = np.inf
    assert [n.sample_id for n in neighbours] == [
        str(service.ids[i]) for i in np.argsort(distances)[:5]
    ]
    # Asking for the same round again returns it, finished, without scoring anything.
    again = service.client.start_round("nih", service.model_id, service.sampler_id)
    assert (again.round_id, again.state) == (finished.round_id, DONE)


def test_killing_the_ranking_actor_mid_round_gives_the_identical_selection(
    service: ServiceEnv,
) -> None:
    # One more label makes a new round (its id digests the labeled set).
    service.client.submit_labels("nih", _labels(service, [LABELED]), submitter="test")
    started = service.client.start_round("nih", service.model_id, service.sampler_id)
    actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    book = RoundBook(LocalStore(service.storage))
    deadline = time.monotonic() + 300
    while service.client.get_round(started.round_id).shards_done < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    results = book.results(book.load(started.round_id))

    def weights_file(name: str) -> Path:
        return service.storage / results.prefix / "shards" / name / "weights.npz"

    before = {name: weights_file(name).stat().st_mtime_ns for name in results.done()}
    ray.kill(actor, no_restart=False)
    finished = service.client.wait_round(started.round_id, timeout=600, progress=False)
    assert finished.state == DONE, finished.message
    assert len(before) < POOL_SIZE // SHARD_SIZE, "the round ended before the kill"
    for name, mtime in before.items():  # finished shards were not scored again
        assert weights_file(name).stat().st_mtime_ns == mtime
    latents = _stored_latents(service, finished.round_id)
    candidates = np.arange(LABELED + 1, POOL_SIZE)
    expected = gestalt_scores(latents[candidates], "node")
    top = select_top(expected, candidates, 10)
    chosen = service.client.selection(finished.round_id, "gestalt_node", 10)
    assert [s.sample_id for s in chosen] == [str(service.ids[i]) for i in candidates[top.indices]]


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.details(), "every error carries a message"
    code: grpc.StatusCode = error.code()
    return code, error.details()


def test_bad_requests_get_precise_codes_and_the_server_keeps_serving(
    service: ServiceEnv, tmp_path: Path
) -> None:
    c = service.client
    done = _round(service).round_id
    inv, nf = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    fp, ae = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "a.npz").write_bytes(b"\x00" * 64)
    cases: list[tuple[Callable[[], object], grpc.StatusCode]] = [
        (lambda: c.register_pool("Bad Id", service.pool_uri), inv),
        (lambda: c.register_pool("x", ""), inv),
        (lambda: c.register_pool("x", str(tmp_path / "missing")), nf),
        (lambda: c.register_pool("nih", str(tmp_path)), ae),
        (lambda: c.register_pool("corrupt", str(tmp_path / "corrupt")), inv),
        (lambda: c.submit_labels("nih", [("ghost.png", [0.0] * 14)]), nf),
        (lambda: c.submit_labels("nih", [(str(service.ids[60]), [1.0])]), inv),
        (lambda: c.submit_labels("nih", [(str(service.ids[0]), [1.0] * 14)]), ae),
        (lambda: c.submit_labels("nih", []), inv),
        (lambda: c.submit_labels("ghost", _labels(service, [70])), nf),
        (lambda: c.start_round("ghost", service.model_id), nf),
        (lambda: c.start_round("nih", "task-r0000-0123456789ab"), inv),
        (lambda: c.start_round("nih", "gestalt-r0009-0123456789ab"), nf),
        (lambda: c.get_round("not-a-round"), inv),
        (lambda: c.get_round("nih.0123456789ab"), nf),
        (lambda: c.selection(done, "nope", 5), inv),
        (lambda: c.selection(done, "gestalt_node", 0), inv),
        (lambda: c.selection(done, "gestalt_node", POOL_SIZE), inv),
        (lambda: c.selection(done, "gestalt_node", 5, page_size=20_000), inv),
        (lambda: c.selection(done, "mvaal", 5), fp),
        (lambda: list(c.stream_selection(done, "nope", 5)), inv),
        (lambda: c.neighbours(done, str(service.ids[3]), 0), inv),
        (lambda: c.neighbours(done, "ghost.png", 3), nf),
    ]
    for number, (call, expected) in enumerate(cases):
        code, details = _code(call)
        assert code == expected, (number, details)
    # Page tokens that no page handed out are refused; the same labels twice change nothing.
    assert _code(lambda: c.stub.GetSelection(
        pb.GetSelectionRequest(round_id=done, strategy="random", budget=5, page_token="x"),
        metadata=c.metadata))[0] == inv  # fmt: skip
    again = c.submit_labels("nih", _labels(service, [0, 1]))
    assert (again.accepted, again.unchanged) == (0, 2)
    assert len(c.selection(done, "random", 5)) == 5  # still serving


def test_health_and_reflection_answer_on_the_grpc_port(service: ServiceEnv) -> None:
    channel = grpc.insecure_channel(service.grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), metadata=service.client.metadata)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = list(reflection.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert "gestalt_al.v1.ActiveLearning" in names
    channel.close()


def test_a_real_prometheus_server_scrapes_the_service_metrics(
    service: ServiceEnv, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """Runs deploy/prometheus/prometheus.yml with its targets file pointed at this cluster."""
    binary = shutil.which("prometheus")
    assert binary, "install Debian's 'prometheus' package (scripts/bootstrap.sh does as root)"
    exporter = ray_cluster.metrics_url.removeprefix("http://").removesuffix("/metrics")
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([{"targets": [exporter], "labels": {"cluster": "test"}}]))
    config = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text()
    config = config.replace("/tmp/ray/prom_metrics_service_discovery.json", str(targets))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(REPO / "deploy" / "prometheus" / "alerts.yml", tmp_path)  # its rule_files
    promtool = str(Path(binary).with_name("promtool"))
    check = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    command = [
        binary, f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'db'}",
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            wait_for_port(port, server)
            scored = _query(
                port, 'sum(ray_gestalt_samples_scored_total{deployment="SaliencyLatents"})'
            )
            assert scored >= POOL_SIZE
            assert _query(port, 'sum(ray_gestalt_grpc_requests_total{code="INVALID_ARGUMENT"})') > 0
            assert _query(port, "sum(ray_gestalt_ranking_seconds_count)") >= 1
            # A gauge set once stays exported, 10 scrapes in a row (Ray drops a plain gauge
            # ~20 s after it was set; the alerts on gauges rely on services.metrics.HeldGauge).
            kept = 'max(count_over_time(ray_gestalt_rounds{state="done"}[1m])) >= 10'
            assert _query(port, kept) >= 10
            groups = yaml.safe_load((tmp_path / "alerts.yml").read_text())["groups"]
            expected = {group["name"]: ["ok"] * len(group["rules"]) for group in groups}
            assert _rule_health(port) == expected
        finally:
            server.terminate()


def _rule_health(port: int, seconds: float = 60) -> dict[str, list[str]]:
    """Each loaded rule group's rule healths, once Prometheus has evaluated every rule."""
    deadline = time.monotonic() + seconds
    health: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
                groups = json.loads(r.read())["data"]["groups"]
            health = {g["name"]: [rule["health"] for rule in g["rules"]] for g in groups}
            if health and all("unknown" not in rules for rules in health.values()):
                return health
        time.sleep(1)
    return health


def _query(port: int, expression: str, seconds: float = 90) -> float:
    """The value of ``expression`` once Prometheus has scraped it."""
    deadline = time.monotonic() + seconds
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as response:
                result = json.loads(response.read())["data"]["result"]
            if result:
                return float(result[0]["value"][1])
        time.sleep(1)
    raise AssertionError(f"Prometheus never returned {expression}")
