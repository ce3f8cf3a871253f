"""Continuous AL loops end to end through the real gRPC port: StartLoop -> the coordinator
actor -> Ray Train retraining -> the ranking actor and Serve scorers -> query lists -> labels
from the oracle or from SubmitLabels -> next round; a coordinator killed mid-loop and a whole
cluster restarted while a loop waits for labels."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import ray
from PIL import Image

from actors.coordinator import COORDINATOR_NAME
from gestalt_al.data import bundled_nih_path
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.service.loops import LoopBook
from gestalt_al.service.query_lists import (
    QueryRow,
    label_studio_tasks,
    png_bytes,
    query_csv,
    read_query_json,
)
from gestalt_al.storage.store import LocalStore
from gestalt_al.v1 import active_learning_pb2 as pb
from services.app import NAMESPACE
from tests.conftest import RayCluster
from tests.service_env import POOL_SIZE, ServiceEnv, start_service

pytestmark = pytest.mark.timeout(900)
DATA = str(bundled_nih_path())
# Tiny models: one epoch, 32 px, Grad-CAM maps, one Ray Train worker on a quarter CPU (the
# Serve replicas hold most of this 2-CPU cluster).
MODEL = {"image_size": 32, "epochs": 1, "saliency": "grad_cam", "latent_dim": 8,
         "autoencoder_epochs": 1, "sampler_epochs": 0, "sampler_width": 4, "workers": 1,
         "cpus_per_worker": 0.25}  # fmt: skip


@pytest.fixture(scope="module")
def service(
    ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceEnv]:
    from services.app import shutdown

    env = start_service(tmp_path_factory.mktemp("loops"))
    yield env
    env.client.close()
    shutdown()


def _until(
    env: ServiceEnv, loop_id: str, condition: Callable[[pb.Loop], bool], seconds: float = 600
) -> pb.Loop:
    deadline = time.monotonic() + seconds
    while True:
        loop = env.client.get_loop(loop_id)
        assert loop.state != pb.LOOP_STATE_FAILED, loop.message
        if condition(loop):
            return loop
        assert time.monotonic() < deadline, f"loop {loop_id} stuck: {loop}"
        time.sleep(0.2)


def _truth(env: ServiceEnv, sample_ids: Any) -> list[tuple[str, list[float]]]:
    row = {str(s): i for i, s in enumerate(env.ids)}
    return [(s, env.labels[row[s]].astype(float).tolist()) for s in sample_ids]


def _stored_labels(env: ServiceEnv, pool_id: str) -> list[dict[str, list[float]]]:
    """Every accepted submission object of the pool, as stored."""
    store = LocalStore(env.storage)
    return [json.loads(store.get(k))["labels"] for k in store.list(f"pools/{pool_id}/labels")]


def test_an_oracle_loop_survives_a_coordinator_kill_without_losing_or_repeating_labels(
    service: ServiceEnv, ray_cluster: RayCluster
) -> None:
    c, pool_id = service.client, "loop-oracle"
    c.register_pool(pool_id, service.pool_uri)
    loop = c.start_loop(
        pool_id, DATA, model=MODEL, strategy="gestalt_node", budget=8, initial_labeled=16,
        max_rounds=2, images_key="images_64", test_split="test",
    )  # fmt: skip
    loop_id = loop.loop_id
    assert loop_id == "loop-oracle-loop"
    # Kill the coordinator while round 1 retrains (Ray Train workers running, or starting).
    _until(service, loop_id, lambda s: s.round == 1 and s.stage == pb.LOOP_STAGE_TRAINING)
    time.sleep(3)
    before_kill = c.get_loop(loop_id)
    ray.kill(ray.get_actor(COORDINATOR_NAME, namespace=NAMESPACE), no_restart=False)
    finished = c.wait_loop(loop_id, timeout=800, progress=False)
    assert before_kill.state == pb.LOOP_STATE_RUNNING, "the loop ended before the kill"
    assert finished.state == pb.LOOP_STATE_FINISHED, finished.message
    assert finished.stop_reason == "max_rounds: 2 rounds queried"
    assert [(r.round, r.final, r.num_queried) for r in finished.rounds] == [
        (0, False, 8), (1, False, 8), (2, True, 0)]  # fmt: skip
    assert [r.num_labeled for r in finished.rounds] == [16, 24, 32]
    assert finished.num_labeled == 32

    # The persisted state: each round's labeled set, models, ranking round, selection.
    book, registry = LoopBook(LocalStore(service.storage)), ModelRegistry(str(service.storage))
    record, rounds = book.load(loop_id), book.rounds(loop_id)
    queried = [q.index for q in record.initial] + [q.index for r in rounds for q in r.queries]
    assert len(queried) == len(set(queried)) == 32, "a sample was queried twice"
    labeled = [book.labeled(loop_id, r.round) for r in rounds]
    for state, before, after in zip(rounds, labeled, [*labeled[1:], None], strict=True):
        assert before is not None
        assert state.stage == "done"
        assert registry.exists(state.model_id)
        assert 0 <= state.metrics["val"]["macro_auc"] <= 1
        assert 0 <= state.metrics["test"]["macro_auc"] <= 1
        assert state.metrics["best_epoch"] == 1
        chosen = [q.index for q in state.queries]
        assert not set(chosen) & set(before.tolist())
        if after is not None:
            assert after.tolist() == sorted([*before.tolist(), *chosen])
    # With nothing queried-but-unlabeled, a round's query is the service's own top-b.
    first = rounds[0]
    top = c.selection(first.service_round_id, "gestalt_node", 8)
    assert [s.sample_id for s in top] == [q.sample_id for q in first.queries]
    assert [s.score for s in top] == [q.score for q in first.queries]

    # Every oracle label is stored exactly once and is the ground truth.
    submissions = _stored_labels(service, pool_id)
    counts = Counter(int(i) for labels in submissions for i in labels)
    assert sorted(counts) == sorted(queried)
    assert set(counts.values()) == {1}
    for labels in submissions:
        for index, values in labels.items():
            assert values == service.labels[int(index)].astype(float).tolist()

    # The loop's metrics reach Ray's Prometheus export.
    deadline = time.monotonic() + 60
    text = ""
    while "ray_gestalt_loop_round" not in text and time.monotonic() < deadline:
        with urllib.request.urlopen(ray_cluster.metrics_url, timeout=5) as response:
            text = response.read().decode()
        time.sleep(1)
    assert f'loop="{loop_id}"' in text
    assert "ray_gestalt_loop_stage_seconds" in text


def test_an_external_loop_waits_for_labels_and_survives_a_whole_cluster_restart(
    service: ServiceEnv, ray_cluster: RayCluster
) -> None:
    c, pool_id = service.client, "loop-external"
    c.register_pool(pool_id, service.pool_uri)
    config: dict[str, Any] = {
        "label_source": "external", "strategy": "vaal", "budget": 6, "initial_labeled": 12,
        "max_rounds": 1, "poll_seconds": 0.5, "images_key": "images_64",
    }  # fmt: skip
    model = {**MODEL, "sampler_epochs": 1}
    loop_id = c.start_loop(pool_id, DATA, model=model, **config).loop_id

    # First the initial random set is queried, and the loop waits for its labels.
    initial = _until(service, loop_id, lambda s: len(s.query_ids) == 12)
    time.sleep(1.5)
    assert c.get_loop(loop_id).state == pb.LOOP_STATE_INITIAL_LABELS
    folder = Path(initial.query_uri).parent
    rows = list(csv.DictReader(io.StringIO((folder / "query.csv").read_text())))
    assert [r["sample_id"] for r in rows] == list(initial.query_ids)
    assert {r["round"] for r in rows} == {""}
    png = Image.open(rows[0]["uri"])
    assert png.size == (64, 64)
    tasks = json.loads((folder / "label_studio.json").read_text())
    assert [t["data"]["sample_id"] for t in tasks] == list(initial.query_ids)
    served = json.loads(
        label_studio_tasks(
            read_query_json((folder / "query.json").read_bytes()), str(service.storage.resolve())
        )
    )
    assert served[0]["data"]["image"].startswith("/data/local-files/?d=loops/loop-external-loop")
    c.submit_labels(pool_id, _truth(service, initial.query_ids), submitter="radiologist")

    # Round 0 trains (task model and VAAL sampler), ranks, queries 6 and waits for them.
    waiting = _until(service, loop_id, lambda s: s.stage == pb.LOOP_STAGE_AWAITING_LABELS)
    round_0 = waiting.rounds[0]
    assert round_0.sampler_model_id.startswith("sampler-")
    asked = list(waiting.query_ids)
    assert len(asked) == 6
    assert not set(asked) & set(initial.query_ids)
    json_list = json.loads(Path(waiting.query_uri).read_text())
    assert json_list["strategy"] == "vaal"
    assert [s["sample_id"] for s in json_list["samples"]] == asked
    round_id = round_0.service_round_id
    c.submit_labels(pool_id, _truth(service, asked[:3]), round_id=round_id)
    half = _until(service, loop_id, lambda s: s.rounds[0].num_query_labeled == 3)
    assert half.stage == pb.LOOP_STAGE_AWAITING_LABELS

    # The whole cluster goes down (coordinator, ranking actor, replicas, gRPC proxy, GCS) and
    # the operator deploys again: the new coordinator picks the loop up from the store, with
    # the same query and the 3 labels that had arrived.
    ray_cluster.restart()
    service.redeploy()
    resumed = _until(service, loop_id, lambda s: s.rounds[0].num_query_labeled == 3)
    assert (resumed.state, resumed.stage) == (pb.LOOP_STATE_RUNNING, half.stage)
    assert list(resumed.query_ids) == asked
    flipped = [(s, [1.0 - v for v in values]) for s, values in _truth(service, asked[:1])]
    with pytest.raises(grpc.RpcError) as conflict:
        c.submit_labels(pool_id, flipped, round_id=round_id)
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    response = c.submit_labels(pool_id, _truth(service, asked), round_id=round_id)
    assert (response.accepted, response.unchanged) == (3, 3)

    finished = c.wait_loop(loop_id, timeout=600, progress=False)
    assert finished.state == pb.LOOP_STATE_FINISHED, finished.message
    assert [(r.num_labeled, r.final) for r in finished.rounds] == [(12, False), (18, True)]
    assert finished.rounds[1].sampler_model_id == ""  # the last round ranks nothing
    assert finished.rounds[1].HasField("val_macro_auc")
    counts = Counter(int(i) for labels in _stored_labels(service, pool_id) for i in labels)
    assert len(counts) == 18
    assert set(counts.values()) == {1}, "a label was stored twice"
    # StartLoop is idempotent; another config under the same id is refused.
    again = c.start_loop(pool_id, DATA, model=model, **config)
    assert (again.loop_id, again.state) == (loop_id, pb.LOOP_STATE_FINISHED)
    with pytest.raises(grpc.RpcError) as refused:
        c.start_loop(pool_id, DATA, model=model, **{**config, "budget": 7})
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_bad_loop_requests_get_precise_codes(service: ServiceEnv, tmp_path: Path) -> None:
    c = service.client
    c.register_pool("loop-bad", service.pool_uri)
    good: dict[str, Any] = {"max_rounds": 1, "images_key": "images_64"}
    inv, nf = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases: list[tuple[Callable[[], object], grpc.StatusCode, str]] = [
        (lambda: c.start_loop("loop-bad", DATA, **{**good, "budget": -1}), inv, "budget"),
        (lambda: c.start_loop("loop-bad", DATA, strategy="best", max_rounds=1), inv, "strategy"),
        (lambda: c.start_loop("loop-bad", DATA, strategy="mvaal", max_rounds=1), inv, "vaal"),
        (lambda: c.start_loop("loop-bad", DATA, strategy="vaal", max_rounds=1), inv, "sampler"),
        (lambda: c.start_loop("loop-bad", DATA, images_key="images_64"), inv, "stopping rule"),
        (lambda: c.start_loop("loop-bad", DATA, label_source="robot", **good), inv, "label_so"),
        (lambda: c.start_loop("loop-bad", "", **good), inv, "data is required"),
        (lambda: c.start_loop("loop-bad", "nih.npz", **good), inv, "absolute path"),
        (lambda: c.start_loop("Bad Pool", DATA, **good), inv, "pool_id"),
        (lambda: c.start_loop("ghost", DATA, **good), nf, "ghost"),
        (lambda: c.start_loop("loop-bad", str(tmp_path / "no.npz"), **good), inv, "no such"),
        (lambda: c.start_loop("loop-bad", DATA, max_rounds=1), inv, "images_key"),
        (lambda: c.start_loop("loop-bad", DATA, oracle_split="val", **good), inv, "oracle"),
        (lambda: c.start_loop("loop-bad", DATA, initial_labeled=POOL_SIZE, **good), inv,
         "smaller than the pool"),
        (lambda: c.get_loop("ghost-loop"), nf, "StartLoop"),
        (lambda: c.get_loop("Not A Loop"), inv, "loop id"),
    ]  # fmt: skip
    for number, (call, expected, words) in enumerate(cases):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        error = caught.value
        assert isinstance(error, grpc.Call)
        assert (error.code(), words in error.details()) == (expected, True), (number, error)
    # A refused StartLoop leaves no loop behind.
    with pytest.raises(grpc.RpcError) as caught:
        c.get_loop("loop-bad-loop")
    assert caught.value.code() == nf


def test_query_lists_load_in_labeling_tools(tmp_path: Path) -> None:
    row = QueryRow("a b.png", 1, 0.5, 3, "gestalt_node", str(tmp_path / "r" / "00001.png"),
                   "s3://bucket/pool/shard-000000.npz", 7)  # fmt: skip
    text = query_csv([row]).decode()
    assert text.splitlines()[0] == "sample_id,rank,score,round,strategy,uri,shard_uri,shard_index"
    tasks = json.loads(label_studio_tasks([row], local_files_root=str(tmp_path)))
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=r/00001.png"
    assert tasks[0]["data"]["sample_id"] == "a b.png"
    s3_row = QueryRow("x", 1, 0.0, None, "random", "s3://b/loops/x.png", "s3://b/p.npz", 0)
    assert json.loads(label_studio_tasks([s3_row], str(tmp_path)))[0]["data"]["image"] == (
        "s3://b/loops/x.png"
    )
    image = np.linspace(0, 1, 64 * 48).reshape(48, 64)  # float in [0, 1]
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image))))
    assert decoded.shape == (48, 64)
    assert np.abs(decoded / 255 - image).max() <= 0.5 / 255 + 1e-9
