"""The ranking actor's round bookkeeping against a real S3 server (nanio) that goes away:
the round fails as unavailable, nothing written is lost, and starting it again resumes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from minio import Minio

from actors.ranking import RankingActor
from gestalt_al.ranking import gestalt_scores
from gestalt_al.service.pool import PoolCatalog, write_pool
from gestalt_al.service.rounds import RoundBook, RoundRecord, round_id_for
from gestalt_al.service.shard_results import ShardScores
from gestalt_al.storage import StoreUnavailableError, open_store
from tests.conftest import RayCluster
from tests.servers import S3Endpoint, free_port, nanio_server

N, SHARD, K = 12, 4, 3
MODEL = "gestalt-r0000-0123456789ab"


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, int]:
    data_dir, port = tmp_path / "s3", free_port()
    with nanio_server(data_dir, port) as endpoint:
        _environment(monkeypatch, endpoint)
        Minio(endpoint.endpoint, access_key=endpoint.access_key, secret_key=endpoint.secret_key,
              secure=False, region="us-east-1").make_bucket("gestalt")  # fmt: skip
    return data_dir, port


def _environment(monkeypatch: pytest.MonkeyPatch, endpoint: S3Endpoint) -> None:
    monkeypatch.setenv("GESTALT_S3_ENDPOINT", endpoint.endpoint)
    monkeypatch.setenv("GESTALT_S3_ACCESS_KEY", endpoint.access_key)
    monkeypatch.setenv("GESTALT_S3_SECRET_KEY", endpoint.secret_key)
    monkeypatch.setenv("GESTALT_S3_SECURE", "false")


def test_a_storage_outage_fails_the_round_as_unavailable_and_it_resumes(
    ray_cluster: RayCluster, s3_env: tuple[Path, int]
) -> None:
    data_dir, port = s3_env
    storage, pool_uri = "s3://gestalt/service", "s3://gestalt/pool"
    latents = np.random.default_rng(3).normal(size=(N, K, 4)).astype(np.float32)
    labeled = np.array([0, 5])
    with nanio_server(data_dir, port):
        ids = [f"img{i:02d}" for i in range(N)]
        images = np.zeros((N, 8, 8), dtype=np.uint8)
        write_pool(open_store(pool_uri), "", ids, images, ("a", "b", "c"), SHARD)
        store = open_store(storage)
        PoolCatalog(store).register("p", pool_uri)
        actor = RankingActor(storage, "no-serve-needed")  # every shard below is already scored
        round_id = round_id_for("p", MODEL, "", labeled)
        record = RoundRecord(round_id, "p", MODEL, "", shards_total=N // SHARD, num_labeled=2)
        book = RoundBook(store)
        book.save_labeled(round_id, labeled)
        book.save(record)
        results = book.results(record)
        for start in range(0, N, SHARD):
            rows = np.arange(start, start + SHARD)
            results.write(f"{start:012d}", ShardScores(rows, latents[rows], rows * 0.0, None))
        written = sorted(store.list(""))
    # The server is down: starting fails at once, and a running round fails as unavailable.
    with pytest.raises(StoreUnavailableError):
        actor.start(round_id, "p", MODEL, "", labeled)
    actor.records[round_id] = record
    actor.run_round(record)
    failed = actor.status(round_id)
    assert failed.state == "failed"
    assert failed.unavailable
    assert "object store unavailable" in failed.message
    # Back up on the same data: nothing was lost, and the same round resumes to the end.
    with nanio_server(data_dir, port):
        assert set(written) <= set(store.list(""))
        assert actor.start(round_id, "p", MODEL, "", labeled).state == "scoring"
        deadline = time.monotonic() + 60
        while not actor.status(round_id).finished and time.monotonic() < deadline:
            time.sleep(0.1)
        done = actor.status(round_id)
        assert done.state == "done", done.message
        assert done.shards_done == N // SHARD  # nothing was scored again
        scores = book.scores(round_id)
        candidates = np.setdiff1d(np.arange(N), labeled)
        np.testing.assert_array_equal(scores.candidates, candidates)
        np.testing.assert_array_equal(
            scores.scores["gestalt_weighted_node"],
            gestalt_scores(latents[candidates], "weighted_node", latents[labeled]),
        )
