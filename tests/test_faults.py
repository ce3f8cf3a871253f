"""Faults in the middle of a round, through the real gRPC port: a Serve scorer replica killed,
the S3 server of the service's store stopped and started again on the same data, the disk of
a local store filled. Each round ends DONE, or FAILED as UNAVAILABLE and then resumed by the
same StartRound, with the selection of an uninterrupted round, and no submitted label is lost
or stored twice. (The ranking actor, the loop coordinator and a Ray Train worker are killed in
test_service_grpc, test_coordinator and test_ray_train.)

One service is deployed at a time (Serve runs one ``gestalt`` application per cluster): a
local store on a small tmpfs for the first two tests, then a store in an S3 bucket."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import grpc
import numpy as np
import pytest
import ray
from grpc_health.v1 import health_pb2, health_pb2_grpc
from minio import Minio

from gestalt_al.client import ServiceClient
from gestalt_al.data import bundled_nih_path, load_dataset
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.latents import AutoencoderConfig
from gestalt_al.models import ModelConfig
from gestalt_al.ranking import gestalt_scores, select_top
from gestalt_al.service.models import GestaltModel
from gestalt_al.service.pool import write_pool
from gestalt_al.service.rounds import RoundBook
from gestalt_al.service.shard_results import index_latents
from gestalt_al.storage import ObjectStore, StoreUnavailableError, open_store
from gestalt_al.storage.store import LocalStore
from gestalt_al.training import TrainConfig, train_task_model
from gestalt_al.v1 import active_learning_pb2 as pb
from tests.conftest import RayCluster
from tests.servers import S3Endpoint, free_port, nanio_server
from tests.service_env import LABELED, POOL_SIZE, SHARD_SIZE

pytestmark = pytest.mark.timeout(600)
DONE, FAILED = pb.ROUND_STATE_DONE, pb.ROUND_STATE_FAILED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
SHARDS = POOL_SIZE // SHARD_SIZE
POOL = "nih"
PAGE = 4096  # tmpfs allocates whole pages


@dataclass(frozen=True)
class Models:
    """The NIH pool, one small task model with Grad-CAM latents (published into each
    service's registry), and the latents it gives the pool in one uninterrupted call."""

    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    gestalt: GestaltModel
    latents: np.ndarray


@dataclass(frozen=True)
class Service:
    client: ServiceClient
    storage: str  # as deployed: a folder or s3://bucket/prefix
    store: ObjectStore  # the same store, for the test to look into
    model_id: str


def _models() -> Models:
    data = load_dataset(bundled_nih_path(), "train", "images_64")
    assert data.labels is not None
    ids, images, labels = data.ids[:POOL_SIZE], data.images[:POOL_SIZE], data.labels[:POOL_SIZE]
    config = ModelConfig("resnet18", data.num_classes, "multi_label", image_size=32)
    trained = train_task_model(
        config, images[:LABELED], labels[:LABELED], images[LABELED:40], labels[LABELED:40],
        TrainConfig(max_epochs=1), show_progress=False,
    )  # fmt: skip
    gestalt = GestaltModel.fit(
        trained.model, config, images[:LABELED], "grad_cam",
        AutoencoderConfig(latent_dim=8, epochs=2), progress=False,
    )  # fmt: skip
    latents = gestalt.score(images)["latents"]
    return Models(ids, images, labels, tuple(data.label_names), gestalt, latents)


class Services:
    """Deploys the service on one store at a time: ``local()`` (a folder on a tmpfs this test
    can fill) or ``s3()`` (a bucket on a nanio server this test can stop and start again)."""

    def __init__(self, root: Path, models: Models) -> None:
        self.root, self.models = root, models
        self.stack = ExitStack()
        self.kind = ""
        self.service: Service | None = None
        self.mount = root / "tmpfs"
        self.s3_dir, self.s3_port = root / "s3", free_port()
        self.s3_server: ExitStack | None = None
        self.s3_endpoint: S3Endpoint | None = None
        self.environment = pytest.MonkeyPatch()
        self.stack.callback(self.environment.undo)

    # --- the local store on a tmpfs -----------------------------------------------------
    def local(self) -> Service:
        if self.kind != "local":
            self._shutdown()
            if not self.mount.is_mount():
                self.stack.enter_context(_tmpfs(self.mount, "96m"))  # the model takes 45 MB
                self._write_pool(open_store(str(self.root / "pool")))
            self._deploy("local", str(self.mount / "service"), str(self.root / "pool"), {})
        assert self.service is not None
        return self.service

    def fill_disk(self) -> None:
        _fill(self.mount / "filler")

    def free_one_page(self) -> None:
        _free_one_page(self.mount / "filler")

    def free_disk(self) -> None:
        (self.mount / "filler").unlink()

    # --- the store in an S3 bucket --------------------------------------------------------
    def s3(self) -> Service:
        if self.kind != "s3":
            self._shutdown()
            if not self.s3_dir.exists():
                self.s3_dir.mkdir()
                self.stack.callback(self.stop_s3)
                endpoint = self.start_s3()
                for name, value in _s3_environment(endpoint).items():  # this process's stores
                    self.environment.setenv(name, value)
                Minio(endpoint.endpoint, access_key=endpoint.access_key,
                      secret_key=endpoint.secret_key, secure=False,
                      region="us-east-1").make_bucket("gestalt")  # fmt: skip
                self._write_pool(open_store("s3://gestalt/pool"))
            assert self.s3_endpoint is not None
            environment = _s3_environment(self.s3_endpoint)
            self._deploy("s3", "s3://gestalt/service", "s3://gestalt/pool", environment)
        assert self.service is not None
        return self.service

    def start_s3(self) -> S3Endpoint:
        """The nanio server on the same folder and port as before."""
        assert self.s3_server is None
        self.s3_server = ExitStack()
        self.s3_endpoint = self.s3_server.enter_context(nanio_server(self.s3_dir, self.s3_port))
        return self.s3_endpoint

    def stop_s3(self) -> None:
        if self.s3_server is not None:
            self.s3_server.close()
            self.s3_server = None

    # --- deploying ------------------------------------------------------------------------
    def _write_pool(self, store: ObjectStore) -> None:
        m = self.models
        write_pool(store, "", list(m.ids), m.images, m.label_names, SHARD_SIZE)

    def _deploy(self, kind: str, storage: str, pool_uri: str, environment: dict[str, str]) -> None:
        """What an operator's Serve config does (``import_path: services.app:app_builder``),
        with the ``GESTALT_S3_*`` variables as the application's ``runtime_env``: the
        session's Ray cluster was started without them, and every replica, the actors they
        create and the Ray Data tasks of a round need them."""
        from ray.serve._private.api import serve_start
        from ray.serve.config import gRPCOptions
        from ray.serve.schema import ServeDeploySchema

        from services.app import APP_NAME, ROUTE_PREFIX, SERVICERS, ServiceConfig, app_args

        model_id = self.models.gestalt.publish(ModelRegistry(storage), 0)
        # One latents replica (no autoscaling): a replica killed mid-round is the one that
        # holds the round's requests.
        config = ServiceConfig(storage, grpc_port=free_port(), latent_replicas=1,
                               cpus_per_replica=0.5)  # fmt: skip
        application: dict[str, Any] = {
            "name": APP_NAME, "route_prefix": ROUTE_PREFIX,
            "import_path": "services.app:app_builder", "args": app_args(config),
        }  # fmt: skip
        if environment:
            application["runtime_env"] = {"env_vars": environment}
        # Serve notices a dead replica at its next health check (10 s by default).
        application["deployments"] = [{"name": "SaliencyLatents", "health_check_period_s": 1}]
        client = serve_start(
            http_options={"host": "127.0.0.1", "port": free_port()},
            grpc_options=gRPCOptions(port=config.grpc_port, grpc_servicer_functions=SERVICERS),
        )
        self.kind = kind  # from here on, _shutdown stops it
        client.deploy_apps(ServeDeploySchema.model_validate({"applications": [application]}))
        target = f"127.0.0.1:{config.grpc_port}"
        _wait_serving(target, APP_NAME)
        service = Service(ServiceClient(target), storage, open_store(storage), model_id)
        pool = service.client.register_pool(POOL, pool_uri)
        assert (pool.num_samples, pool.num_shards) == (POOL_SIZE, SHARDS)
        self.service = service

    def _shutdown(self) -> None:
        from services.app import shutdown

        if self.service is not None:
            self.service.client.close()
            self.service = None
        if self.kind:
            shutdown()
            self.kind = ""

    def close(self) -> None:
        try:
            self._shutdown()
        finally:
            self.stack.close()


def _s3_environment(endpoint: S3Endpoint) -> dict[str, str]:
    return {
        "GESTALT_S3_ENDPOINT": endpoint.endpoint,
        "GESTALT_S3_ACCESS_KEY": endpoint.access_key,
        "GESTALT_S3_SECRET_KEY": endpoint.secret_key,
        "GESTALT_S3_SECURE": "0",
    }


@contextlib.contextmanager
def _tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A small file system of its own at ``mount`` (the tests run as root)."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "gestalt-faults", str(mount)],
                   check=True)  # fmt: skip
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)  # busy: detach it now


def _fill(filler: Path) -> None:
    """Append to ``filler`` until its file system refuses one more byte (pages that failed
    writes freed again are taken too)."""
    with open(filler, "ab", buffering=0) as stream:
        for size in (1 << 20, PAGE, 1):
            with contextlib.suppress(OSError):
                while True:
                    stream.write(b"\0" * size)


def _free_one_page(filler: Path) -> None:
    os.truncate(filler, (filler.stat().st_size // PAGE - 1) * PAGE)


def _wait_serving(target: str, application: str, seconds: float = 300) -> None:
    """Until the application answers health checks as SERVING (scorers and ranking actor up);
    the proxy's route table may lag the application's status by a moment."""
    deadline = time.monotonic() + seconds
    status: Any = None
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, f"not serving after {seconds} s: {status}"
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=15,
                                      metadata=(("application", application),)).status  # fmt: skip
            except grpc.RpcError as error:
                status = error.code()
            if status != health_pb2.HealthCheckResponse.SERVING:
                time.sleep(1)


@pytest.fixture(scope="module")
def services(
    ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    deployed = Services(tmp_path_factory.mktemp("faults"), _models())
    try:
        yield deployed
    finally:
        deployed.close()


# --- helpers --------------------------------------------------------------------------------


def _labels(models: Models, rows: Any) -> list[tuple[str, list[float]]]:
    return [(str(models.ids[i]), models.labels[i].astype(float).tolist()) for i in rows]


def _start(service: Service) -> pb.Round:
    return service.client.start_round(POOL, service.model_id)


def _until_scored(service: Service, round_id: str, shards: int) -> pb.Round:
    """Poll until ``shards`` shards of the round are scored; the round must still be running."""
    deadline = time.monotonic() + 300
    while (state := service.client.get_round(round_id)).shards_done < shards:
        assert state.state not in (DONE, FAILED), state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    assert state.shards_done < SHARDS, "the round ended before the fault"
    return state


def _wait(service: Service, round_id: str) -> pb.Round:
    return service.client.wait_round(round_id, timeout=400, progress=False)


def _stored_latents(service: Service, round_id: str) -> np.ndarray:
    book = RoundBook(service.store)
    results = book.results(book.load(round_id))
    parts = [index_latents(results.index(name), 14) for name in sorted(results.done())]
    assert np.concatenate([ids for ids, _ in parts]).tolist() == list(range(POOL_SIZE))
    return np.concatenate([latents for _, latents in parts])


def _expected_selection(models: Models, latents: np.ndarray, labeled: int) -> list[str]:
    """The top 10 of gestalt_node over the unlabeled rows, ranked in one array."""
    candidates = np.arange(labeled, POOL_SIZE)
    top = select_top(gestalt_scores(latents[candidates], "node"), candidates, 10)
    return [str(models.ids[i]) for i in candidates[top.indices]]


def _selection(service: Service, round_id: str) -> list[str]:
    return [s.sample_id for s in service.client.selection(round_id, "gestalt_node", 10)]


def _label_objects(service: Service) -> list[dict[str, list[float]]]:
    """Every accepted submission object of the pool, as stored (parsing each one)."""
    store = service.store
    return [json.loads(store.get(k))["labels"] for k in store.list(f"pools/{POOL}/labels")]


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.Call)
    code: grpc.StatusCode = error.code()
    return code, error.details()


def _check_labels(service: Service, models: Models, submissions: list[range]) -> None:
    """The stored submissions are exactly ``submissions``, each once, with the true labels."""
    stored = _label_objects(service)
    assert [sorted(int(i) for i in s) for s in stored] == [list(r) for r in submissions]
    for submission in stored:
        for index, values in submission.items():
            assert values == models.labels[int(index)].astype(float).tolist()


# --- the tests ------------------------------------------------------------------------------


def test_a_local_store_that_takes_no_writes_is_unavailable_and_keeps_every_object_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _tmpfs(tmp_path / "volume", "1m") as volume:
        store = LocalStore(volume / "store")
        store.put("a/b.json", b"old")
        _fill(volume / "filler")
        _free_one_page(volume / "filler")  # the write starts, then the disk is full
        full = f"object store {store.description} is full (no space left on device) while trying"
        for key in ("a/b.json", "new/c.json"):
            with pytest.raises(StoreUnavailableError) as caught:
                store.put(key, b"x" * 3 * PAGE)
            assert str(caught.value) == f"{full} to write {key!r}; free space on it, then retry"
        assert store.get("a/b.json") == b"old"
        assert store.list("") == ["a/b.json"]
        assert sorted(p.name for p in (volume / "store").rglob("*")) == ["a", "b.json", "new"]
        subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
        readonly = "read-only file system while trying to {} 'a/b.json'; remount it read-write"
        with pytest.raises(StoreUnavailableError, match=readonly.format("write")):
            store.put("a/b.json", b"new")
        with pytest.raises(StoreUnavailableError, match=readonly.format("delete")):
            store.delete("a/b.json")
        assert store.get("a/b.json") == b"old"
    # A quota (a tmpfs has none) is the same; any other error stays what it is.
    store = LocalStore(tmp_path / "store")
    monkeypatch.setattr(os, "fsync", _raising(OSError(errno.EDQUOT, "Disk quota exceeded")))
    quota = "over its disk quota while trying to write 'a/b.json'; raise the quota or free space"
    with pytest.raises(StoreUnavailableError, match=quota):
        store.put("a/b.json", b"x")
    monkeypatch.setattr(os, "fsync", _raising(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(OSError, match="Input/output error") as other:
        store.put("a/b.json", b"x")
    assert type(other.value) is OSError
    assert store.list("") == []
    assert [p.name for p in store.root.rglob("*")] == ["a"]  # no staging file


def _raising(error: Exception) -> Callable[..., None]:
    def fail(*args: object) -> None:
        raise error

    return fail


def test_killing_a_scorer_replica_mid_round_gives_the_selection_of_an_uninterrupted_round(
    services: Services,
) -> None:
    from ray.serve._private.constants import SERVE_NAMESPACE

    service, models = services.local(), services.models
    service.client.submit_labels(POOL, _labels(models, range(LABELED)), submitter="test")
    started = _start(service)
    replicas = _replicas(SERVE_NAMESPACE, "SaliencyLatents")
    assert len(replicas) == 1  # the replica that holds every request of the round
    _until_scored(service, started.round_id, 1)
    ray.kill(ray.get_actor(replicas[0], namespace=SERVE_NAMESPACE), no_restart=False)
    finished = _wait(service, started.round_id)
    assert finished.state == DONE, finished.message
    assert finished.shards_done == SHARDS
    assert replicas[0] not in _replicas(SERVE_NAMESPACE, "SaliencyLatents")
    # The latents of an uninterrupted scoring of the pool, so its selection too.
    latents = _stored_latents(service, finished.round_id)
    np.testing.assert_allclose(latents, models.latents, rtol=0, atol=1e-5)
    assert _selection(service, finished.round_id) == _expected_selection(models, latents, LABELED)


def _replicas(namespace: str, deployment: str) -> list[str]:
    """Names of the live replica actors of a deployment (``SERVE_REPLICA::app#name#id``)."""
    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == namespace and f"#{deployment}#" in actor["name"]
    )


def test_a_full_disk_fails_the_round_and_labels_as_unavailable_and_both_resume(
    services: Services,
) -> None:
    service, models, c = services.local(), services.models, services.local().client
    c.submit_labels(POOL, _labels(models, range(LABELED)), submitter="test")  # as the first test
    # One more label than the first test's makes a new round (its id digests the labeled set).
    labeled = LABELED + 1
    c.submit_labels(POOL, _labels(models, [LABELED]), submitter="test")
    started = _start(service)
    _until_scored(service, started.round_id, 1)
    services.fill_disk()
    failed = _wait(service, started.round_id)
    assert failed.state == FAILED
    assert failed.message.startswith(
        f"object store unavailable: object store {service.store.description} is full (no "
        "space left on device) while trying to write 'pools/nih/rounds/"
    ), failed.message

    # Nothing half-written anywhere in the store: no staging file, every object whole.
    _check_store(Path(service.storage))
    code, details = _code(lambda: c.selection(started.round_id, "gestalt_node", 10))
    assert code == UNAVAILABLE, details
    # Labels that do not fit: refused as a whole (one page left: the write starts, then fails).
    services.fill_disk()
    services.free_one_page()
    late = range(64, POOL_SIZE)
    code, details = _code(lambda: c.submit_labels(POOL, _labels(models, late), submitter="test"))
    assert code == UNAVAILABLE, details
    assert details.startswith(
        f"object store {service.store.description} is full (no space left on device) while "
        "trying to write 'pools/nih/labels/"
    ), details
    _check_store(Path(service.storage))
    submitted = [range(LABELED), range(LABELED, labeled)]
    _check_labels(service, models, submitted)
    # Resuming the round needs a write too.
    services.fill_disk()
    code, details = _code(lambda: _start(service))
    assert code == UNAVAILABLE, details
    assert "is full (no space left on device)" in details

    # Space again: the same StartRound resumes the round, and the refused labels go in once.
    services.free_disk()
    _resume_identically(service, models, started.round_id, labeled)
    _check_store(Path(service.storage))
    _submit_once(service, models, late)
    _check_labels(service, models, [*submitted, late])
    # The refused write had started: the submission is larger than the page that was free.
    assert len(service.store.get(service.store.list(f"pools/{POOL}/labels")[-1])) > PAGE


def _resume_identically(service: Service, models: Models, round_id: str, labeled: int) -> None:
    """The same StartRound resumes the failed round to DONE with the latents and selection of
    an uninterrupted scoring."""
    resumed = _start(service)
    assert resumed.round_id == round_id
    finished = _wait(service, round_id)
    assert finished.state == DONE, finished.message
    latents = _stored_latents(service, round_id)
    np.testing.assert_allclose(latents, models.latents, rtol=0, atol=1e-5)
    assert _selection(service, round_id) == _expected_selection(models, latents, labeled)


def _submit_once(service: Service, models: Models, rows: range) -> None:
    """Labels refused during the fault go in now, and a second time change nothing."""
    c = service.client
    accepted = c.submit_labels(POOL, _labels(models, rows), submitter="test")
    assert (accepted.accepted, accepted.unchanged) == (len(rows), 0)
    again = c.submit_labels(POOL, _labels(models, rows), submitter="test")
    assert (again.accepted, again.unchanged) == (0, len(rows))


def _check_store(root: Path) -> None:
    """No staging file is left, and every JSON, NPZ and FAISS object in it reads back."""
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        assert not path.name.startswith(".staging-"), path
        assert path.stat().st_size > 0, path
        if path.suffix == ".json":
            json.loads(path.read_bytes())
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                [arrays[name] for name in arrays.files]
        elif path.suffix == ".faiss":
            assert faiss.deserialize_index(np.fromfile(path, dtype=np.uint8)).ntotal == SHARD_SIZE


def test_an_s3_outage_mid_round_fails_cleanly_and_the_same_round_resumes(
    services: Services,
) -> None:
    service, models = services.s3(), services.models
    c = service.client
    c.submit_labels(POOL, _labels(models, range(LABELED)), submitter="test")
    started = _start(service)
    _until_scored(service, started.round_id, 1)
    services.stop_s3()
    failed = _wait(service, started.round_id)
    assert failed.state == FAILED
    assert failed.message.startswith(
        "object store unavailable: object store s3://gestalt/service unreachable while trying to "
    ), failed.message
    # While the server is down: no selection, no labels, no restart, all UNAVAILABLE.
    late = range(LABELED, LABELED + 8)
    for call in (
        lambda: c.selection(started.round_id, "gestalt_node", 10),
        lambda: c.submit_labels(POOL, _labels(models, late), submitter="test"),
        lambda: _start(service),
    ):
        code, details = _code(call)
        assert code == UNAVAILABLE, details
        assert "object store s3://gestalt/service unreachable" in details
    assert c.get_round(started.round_id).state == FAILED

    # Back on the same data: the labels from before are there, the refused ones are not.
    services.start_s3()
    _check_labels(service, models, [range(LABELED)])
    _resume_identically(service, models, started.round_id, LABELED)
    _submit_once(service, models, late)
    _check_labels(service, models, [range(LABELED), late])
