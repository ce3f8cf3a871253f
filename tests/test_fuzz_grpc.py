"""Fuzzing every gRPC method of the deployed service through Serve's real gRPC port.

Three kinds of hostile input, against one deployment (a pool, its seed labels, one finished
round and one external loop waiting for its initial labels):

1. Requests hypothesis builds for every method (and the health check), mixing the real pool,
   round, sample, model and loop ids with hostile values: empty, huge, unicode, control
   characters, path traversal, ``s3://`` uris, int64 bounds, NaN and inf labels, duplicate
   sample ids, out-of-range budgets, page sizes, page tokens and k. An oracle written here
   from the proto's documented rules gives each request's status code (and words its
   message must hold); the server must answer exactly that. Nothing the other examples
   rely on changes: a request the oracle says would store something (new labels, a pool, a
   round, a loop) is never sent.
2. Malformed protobuf bytes sent straight to the proxy for every method: random bytes,
   truncated and bit-flipped valid requests, wrong wire types. Bytes that parse are judged
   by the same oracle; bytes that do not parse get UNKNOWN from grpc's server inside Serve's
   proxy, before our code runs (see ``UNPARSABLE``), and the server keeps serving.
3. Hostile pool files through RegisterPool, and shards truncated or swapped after their pool
   was registered (the round fails with the file and the problem; others keep answering).

Every request is counted by method and code in ``TALLY``; a crash (INTERNAL, or UNKNOWN for
bytes that parse) or a wrong code fails the example that caused it.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gestalt_al.data import bundled_nih_path
from gestalt_al.service.errors import InvalidArgumentError, NotFoundError
from gestalt_al.service.pool import PoolCatalog, read_shard, shard_bytes, write_pool
from gestalt_al.storage.store import LocalStore
from gestalt_al.v1 import active_learning_pb2 as pb
from tests.conftest import RayCluster
from tests.servers import nanio_server
from tests.service_env import LABELED, POOL_SIZE, SHARD_SIZE, ServiceEnv, start_service

pytestmark = pytest.mark.timeout(1500)

Code = grpc.StatusCode
OK, INV, NF = Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND
FP, AE = Code.FAILED_PRECONDITION, Code.ALREADY_EXISTS
CRASHES = (Code.INTERNAL, Code.UNKNOWN)
API, HEALTH = "gestalt_al.v1.ActiveLearning", "grpc.health.v1.Health"
DATA = str(bundled_nih_path())
INT32, INT64 = 2**31 - 1, 2**63 - 1

# The forms the proto documents (RegisterPoolRequest, and the ids StartRound returns).
POOL_FORM = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
ROUND_FORM = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\.[0-9a-f]{12}")
STRATEGIES = ("gestalt_node", "gestalt_edge", "gestalt_weighted_node", "mvaal", "vaal",
              "hybrid", "random", "uncertainty")  # fmt: skip
DEFAULT_PAGE, MAX_PAGE, MAX_K = 100, 10_000, 1000
# Serve's proxy parses a request with the method's protobuf class before any replica sees it;
# grpc's server answers bytes that do not parse with UNKNOWN "Unexpected <DecodeError>...".
UNPARSABLE = "Error parsing message"

HOSTILE = [
    "", " ", "..", "../../etc", "/", "nih\n", "NIH", " nih", "nih ", "nih/", "nih/../nih",
    "\x00", "nih\x00", "\t", "s3://", "s3://no-such-bucket-gestalt/pool", "%2e%2e%2f", "😀",
    "ü" * 40, "a" * 64, "x" * 5000, "ü" * 3000, "\u202enih", "'; DROP TABLE pools; --",
    "{}", "\\", "nih.0123456789ab\n", "-nih", "_",
]  # fmt: skip


@st.composite
def with_faults(
    draw: st.DrawFn,
    message: Any,
    valid: dict[str, st.SearchStrategy[Any]],
    hostile: dict[str, st.SearchStrategy[Any]],
) -> Any:
    """A valid request with none, one or two fields hostile: every check gets reached."""
    fields = {name: draw(values) for name, values in valid.items()}
    for name in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True)):
        fields[name] = draw(hostile[name])
    return message(**fields)


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.text(max_size=30),
        st.text(alphabet="abcnih0123456789._-/\n", max_size=70),
    )


# --- the tally -----------------------------------------------------------------------------------
@dataclass
class Tally:
    tried: Counter[str] = field(default_factory=Counter)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # would have stored something
    unparsable: Counter[str] = field(default_factory=Counter)  # UNKNOWN from the proxy
    failures: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'method':<16} tried  codes"]
        for method in sorted(self.tried):
            codes = {c: n for (m, c), n in sorted(self.codes.items()) if m == method}
            lines.append(f"{method:<16} {self.tried[method]:>5}  {codes}")
        lines.append(f"not sent (would store): {dict(self.skipped)}")
        lines.append(f"UNKNOWN for unparsable bytes (Serve's proxy): {dict(self.unparsable)}")
        lines.append(f"crashes or wrong codes: {len(self.failures)}")
        return "\n".join(lines)


TALLY = Tally()


@dataclass(frozen=True)
class Expect:
    code: grpc.StatusCode
    words: tuple[str, ...] = ()  # the message holds at least one of these
    writes: bool = False  # an OK that would store something: never sent
    check: Callable[[Any], None] | None = None  # on the OK response


def invalid(*words: str) -> Expect:
    return Expect(INV, words)


# --- the deployment the oracle knows -------------------------------------------------------------
@dataclass
class World:
    env: ServiceEnv
    channel: grpc.Channel
    done: pb.Round
    pools: dict[str, str]  # registered pool id -> its uri
    stored: dict[str, dict[str, tuple[float, ...]]]  # pool -> sample id -> stored labels
    queried: frozenset[str]  # every sample id a selection of the done round handed out
    loops: dict[str, dict[str, Any]]  # loop id -> its config with the defaults filled in
    loop_request: pb.LoopConfig  # what started the one loop
    uris: dict[str, Expect]  # prepared pool uris -> what registering a new pool there gets
    missing_root: str  # an absolute folder that does not exist
    data_arrays: dict[str, tuple[int, ...]]  # DATA's arrays and their shapes
    garbage_file: str  # an absolute path to a file that is no .npz
    num_classes: int

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(str(i) for i in self.env.ids)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self.env.client.metadata


@pytest.fixture(scope="module")
def world(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from services.app import shutdown

    root = tmp_path_factory.mktemp("fuzz")
    started_at = time.monotonic()
    env = start_service(root)
    deployed_at = time.monotonic()
    c = env.client
    c.register_pool("nih", env.pool_uri)
    seed = [(str(env.ids[i]), env.labels[i].astype(float).tolist()) for i in range(LABELED)]
    c.submit_labels("nih", seed, submitter="fuzz")
    started = c.start_round("nih", env.model_id, env.sampler_id)
    done = c.wait_round(started.round_id, timeout=900, progress=False)
    assert done.state == pb.ROUND_STATE_DONE, done.message
    # Hand out every candidate once, so that which samples were queried never depends on
    # which selections the fuzzing happens to make.
    queried = {s.sample_id for s in c.selection(done.round_id, "random", done.num_candidates)}
    loop_request = pb.LoopConfig(
        pool_id="loopfuzz", data=DATA, label_source="external", images_key="images_64",
        max_rounds=1, initial_labeled=2, poll_seconds=60,
        model=pb.ModelSettings(image_size=32, epochs=1, saliency="grad_cam", latent_dim=8,
                               autoencoder_epochs=1, sampler_width=4, workers=1,
                               cpus_per_worker=0.25),
    )  # fmt: skip
    c.register_pool("loopfuzz", env.pool_uri)
    c.stub.StartLoop(loop_request, metadata=c.metadata, timeout=300)
    deadline = time.monotonic() + 300
    while not (loop := c.get_loop("loopfuzz-loop")).query_ids:  # its initial set is out
        assert loop.state != pb.LOOP_STATE_FAILED, loop.message
        assert time.monotonic() < deadline, loop
        time.sleep(0.5)
    assert loop.state == pb.LOOP_STATE_INITIAL_LABELS
    with np.load(DATA) as archive:
        data_arrays = {key: archive[key].shape for key in archive.files}
    uris, garbage = _prepared_uris(root / "uris", env.pool_uri)
    channel = grpc.insecure_channel(env.grpc_target)
    ready_at = time.monotonic()
    stored = {str(env.ids[i]): tuple(env.labels[i].astype(float).tolist()) for i in range(LABELED)}
    yield World(
        env=env, channel=channel, done=done,
        pools={"nih": env.pool_uri, "loopfuzz": env.pool_uri},
        stored={"nih": stored, "loopfuzz": {}}, queried=frozenset(queried),
        loops={"loopfuzz-loop": loop_config(loop_request)}, loop_request=loop_request,
        uris=uris, missing_root=str(root / "missing-root"), data_arrays=data_arrays,
        garbage_file=garbage, num_classes=len(env.labels[0]),
    )  # fmt: skip
    print(
        f"\ndeployed in {deployed_at - started_at:.0f} s, ready in "
        f"{ready_at - started_at:.0f} s, all done in {time.monotonic() - started_at:.0f} s"
    )
    print(TALLY.table())
    channel.close()
    c.close()
    shutdown()


def _prepared_uris(root: Path, pool_uri: str) -> tuple[dict[str, Expect], str]:
    """Folders RegisterPool may be pointed at, and what registering a new pool there gets."""
    (root / "empty").mkdir(parents=True)
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("no shards here")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "shard-000000.npz").write_bytes(b"PK\x03\x04 truncated")
    (root / "a-file.npz").write_bytes(b"\x00" * 64)
    (root / "badname").mkdir()
    ids, images = ["a", "b"], np.zeros((2, 8, 8), dtype=np.uint8)
    (root / "badname" / "a b.npz").write_bytes(shard_bytes(ids, images, ["x"]))
    uris = {
        pool_uri: Expect(OK, writes=True),
        pool_uri + "/": Expect(OK, writes=True),
        str(root / "empty"): Expect(NF, ("no .npz shards",)),
        str(root / "notes"): Expect(NF, ("no .npz shards",)),
        str(root / "corrupt"): invalid("shard-000000.npz: not a readable .npz shard"),
        str(root / "a-file.npz"): invalid("is a file"),
        str(root / "badname"): invalid("a b.npz: shard paths may use only"),
        str(root / "missing" / "deeper"): Expect(NF, ("no such folder",)),
        "/" + "a" * 300: invalid("too long"),
        "/" + "a/" * 2100: invalid("too long"),
    }
    return uris, str(root / "a-file.npz")


# --- sending -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    request: Any  # the protobuf classes
    response: Any
    requests: Callable[[World], st.SearchStrategy[Any]]
    expect: Callable[[World, Any], Expect]
    examples: Callable[[World], list[Any]]  # sent every run: each code the method can give
    codes: frozenset[grpc.StatusCode]
    service: str = API
    streaming: bool = False
    max_examples: int = 50

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def _send(w: World, method: Method, data: bytes) -> tuple[grpc.StatusCode, str, Any]:
    """Raw request bytes to the proxy; the status, its message and the parsed response."""
    try:
        if method.streaming:
            stream = w.channel.unary_stream(method.path)
            raw = list(stream(data, metadata=w.metadata, timeout=180))
            return OK, "", [method.response.FromString(r) for r in raw]
        unary = w.channel.unary_unary(method.path)
        return OK, "", method.response.FromString(unary(data, metadata=w.metadata, timeout=180))
    except grpc.RpcError as error:
        if not isinstance(error, grpc.Call):
            raise
        return error.code(), error.details() or "", None


def _judge(w: World, method: Method, data: bytes, expect: Expect, shown: object) -> None:
    """Send ``data`` and hold the answer to ``expect``; count it either way."""
    code, details, response = _send(w, method, data)
    TALLY.tried[method.name] += 1
    TALLY.codes[method.name, code.name] += 1
    if code == Code.UNKNOWN and UNPARSABLE in expect.words:
        TALLY.unparsable[method.name] += 1
    problem = ""
    if code != expect.code:
        problem = "crash" if code in CRASHES else "wrong code"
        problem += f": expected {expect.code.name}"
    elif code != OK and not details:
        problem = "no message"
    elif expect.words and not any(word in details for word in expect.words):
        problem = f"message lacks any of {expect.words}"
    if problem:
        report = f"{method.name} {problem}, got {code.name} {details[:300]!r} for {shown!r}"[:2000]
        TALLY.failures.append(report)
        raise AssertionError(report)
    if code == OK and expect.check is not None:
        expect.check(response)


def _normal_calls_still_work(w: World) -> None:
    page = w.env.client.selection(w.done.round_id, "gestalt_node", 5)
    assert [s.rank for s in page] == [1, 2, 3, 4, 5]
    assert w.env.client.get_round(w.done.round_id).state == pb.ROUND_STATE_DONE
    assert w.env.client.get_loop("loopfuzz-loop").state == pb.LOOP_STATE_INITIAL_LABELS


# --- shared oracle parts -------------------------------------------------------------------------
def _round_problem(w: World, round_id: str) -> Expect | None:
    if not ROUND_FORM.fullmatch(round_id):
        return invalid("is not a round id")
    if round_id != w.done.round_id:
        return Expect(NF, (f"no round {round_id!r}",))
    return None


def _pool_problem(w: World, pool_id: str) -> Expect | None:
    if not POOL_FORM.fullmatch(pool_id):
        return invalid("pool id")
    if pool_id not in w.pools:
        return Expect(NF, ("no pool",))
    return None


def _model_problem(w: World, model_id: str, kind: str) -> Expect | None:
    """A published model of ``kind``: ``<kind>-r<round, 4+ digits>-<12 hex>``."""
    if not model_id.startswith(f"{kind}-"):
        return invalid(f"is not a {kind} model id")
    form = re.fullmatch(rf"{kind}-r[0-9]{{4,}}-[0-9a-f]{{12}}", model_id)
    if form is None or len(f"models/{model_id}.pt") > 1024:
        return Expect(INV)
    if model_id not in (w.env.model_id, w.env.sampler_id):
        return Expect(NF, ("no published model",))
    return None


def round_ids(w: World) -> st.SearchStrategy[str]:
    done = w.done.round_id
    return st.one_of(
        st.just(done),
        st.sampled_from([done + "\n", done.upper(), done[:-1], done + "0", " " + done,
                         "nih.0123456789ab", "ghost.0123456789ab", done.replace(".", "/")]),
        st.from_regex(ROUND_FORM, fullmatch=True),
        hostile_text(),
    )  # fmt: skip


def int64s() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(-INT64 - 1, INT64), st.sampled_from([-INT64 - 1, -1, 0, INT64]))


# --- RegisterPool --------------------------------------------------------------------------------
def register_requests(w: World) -> st.SearchStrategy[pb.RegisterPoolRequest]:
    absolute = st.builds(lambda t: f"{w.missing_root}/{t}", st.text(max_size=30))
    valid = {
        "pool_id": st.sampled_from(["nih", "loopfuzz", "ghost", "fresh-pool"]),
        "uri": st.sampled_from(sorted(w.uris)) | absolute,
    }
    # Hostile absolute paths go under a missing folder: '/tmp' or '/' would be scanned.
    uris = hostile_text().map(lambda t: w.missing_root + t if t.startswith("/") else t)
    return with_faults(pb.RegisterPoolRequest, valid, {"pool_id": hostile_text(), "uri": uris})


def expect_register(w: World, r: pb.RegisterPoolRequest) -> Expect:
    if not r.uri:
        return invalid("uri is required")
    if not POOL_FORM.fullmatch(r.pool_id):
        return invalid("pool id")
    if r.pool_id in w.pools:  # the same registration again is a no-op
        if r.uri != w.pools[r.pool_id]:
            return Expect(AE, ("is registered with",))
        return Expect(OK, check=lambda p: _check_pool(p, r.pool_id))
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in r.uri):
        return invalid("control characters")
    if r.uri.startswith("s3://"):  # malformed, or this service has no S3 settings
        return invalid("pool uri")
    if not r.uri.startswith("/"):
        return invalid("absolute")
    if r.uri in w.uris:
        return w.uris[r.uri]
    if r.uri == "/":
        return invalid("more than 100000 entries")
    if len(r.uri.encode()) > 4095 or any(len(p.encode()) > 255 for p in r.uri.split("/")):
        return invalid("too long")
    # Generated uris lie under missing_root; a flipped bit in a body can make any other
    # absolute path ("/ mp/..."): NOT_FOUND as long as nothing is there.
    assert r.uri.startswith(w.missing_root + "/") or not os.path.lexists(r.uri), r.uri
    return Expect(NF, ("no such folder",))


def _check_pool(pool: pb.Pool, pool_id: str) -> None:
    assert (pool.pool_id, pool.num_samples, pool.num_shards) == (
        pool_id,
        POOL_SIZE,
        POOL_SIZE // SHARD_SIZE,
    )


def register_examples(w: World) -> list[pb.RegisterPoolRequest]:
    R = pb.RegisterPoolRequest  # noqa: N806
    return [
        R(pool_id="nih", uri=w.env.pool_uri),
        R(pool_id="nih", uri=w.env.pool_uri + "/"),
        R(pool_id="nih", uri="../../etc"),
        R(pool_id="x", uri=""),
        R(pool_id="Bad Id", uri=w.env.pool_uri),
        R(pool_id="nih\n", uri=w.env.pool_uri),
        R(pool_id="x", uri="../../etc"),
        R(pool_id="x", uri="s3://no-such-bucket-gestalt/pool"),
        R(pool_id="x", uri=f"{w.missing_root}/x\x00"),
        R(pool_id="x", uri="/"),  # a whole disk is not scanned
        *(R(pool_id="x", uri=uri) for uri in w.uris if not w.uris[uri].writes),
    ]


# --- StartRound ----------------------------------------------------------------------------------
def model_ids(w: World, kind: str) -> st.SearchStrategy[str]:
    fixed = [w.env.model_id, w.env.sampler_id, f"{kind}-r0009-0123456789ab",
             f"{kind}-r0000-0123456789ab\n", f"{kind}-r" + "0" * 1100 + "-0123456789ab",
             f"{kind}-r\u0661\u0662\u0663\u0664-0123456789ab",  # Arabic-Indic digits
             "task-r0000-0123456789ab", f"{kind}-"]  # fmt: skip
    return st.one_of(
        st.sampled_from(fixed),
        st.from_regex(rf"{kind}-r[0-9]{{4,6}}-[0-9a-f]{{12}}", fullmatch=True),
        hostile_text(),
    )


def start_round_requests(w: World) -> st.SearchStrategy[pb.StartRoundRequest]:
    valid = {"pool_id": st.just("nih"), "model_id": st.just(w.env.model_id),
             "sampler_model_id": st.just(w.env.sampler_id)}  # fmt: skip
    hostile = {
        "pool_id": st.sampled_from(["loopfuzz", "ghost"]) | hostile_text(),
        "model_id": model_ids(w, "gestalt"),
        "sampler_model_id": st.just("") | model_ids(w, "sampler"),
    }
    return with_faults(pb.StartRoundRequest, valid, hostile)


def expect_start_round(w: World, r: pb.StartRoundRequest) -> Expect:
    problem = (
        _pool_problem(w, r.pool_id)
        or _model_problem(w, r.model_id, "gestalt")
        or (_model_problem(w, r.sampler_model_id, "sampler") if r.sampler_model_id else None)
    )
    if problem:
        return problem
    if (r.pool_id, r.model_id, r.sampler_model_id) == ("nih", w.env.model_id, w.env.sampler_id):

        def same_round(found: pb.Round) -> None:  # the same round, found, not scored again
            assert (found.round_id, found.state) == (w.done.round_id, pb.ROUND_STATE_DONE)

        return Expect(OK, check=same_round)
    return Expect(OK, writes=True)


def start_round_examples(w: World) -> list[pb.StartRoundRequest]:
    R = pb.StartRoundRequest  # noqa: N806
    model, sampler = w.env.model_id, w.env.sampler_id
    return [
        R(pool_id="nih", model_id=model, sampler_model_id=sampler),
        R(pool_id="ghost", model_id=model),
        R(pool_id="../etc", model_id=model),
        R(pool_id="nih", model_id=sampler),
        R(pool_id="nih", model_id=model, sampler_model_id=model),
        R(pool_id="nih", model_id="gestalt-r0009-0123456789ab"),
        R(pool_id="nih", model_id=model, sampler_model_id="sampler-r0009-0123456789ab"),
        R(pool_id="nih", model_id=model + "\n"),
        R(pool_id="nih", model_id="gestalt-r" + "0" * 1100 + "-0123456789ab"),
    ]


# --- GetRound ------------------------------------------------------------------------------------
def get_round_requests(w: World) -> st.SearchStrategy[pb.GetRoundRequest]:
    return with_faults(pb.GetRoundRequest, {"round_id": st.just(w.done.round_id)},
                       {"round_id": round_ids(w)})  # fmt: skip


def expect_get_round(w: World, r: pb.GetRoundRequest) -> Expect:
    def done(found: pb.Round) -> None:
        assert (found.round_id, found.state) == (w.done.round_id, pb.ROUND_STATE_DONE)
        assert found.num_candidates == POOL_SIZE - LABELED

    return _round_problem(w, r.round_id) or Expect(OK, check=done)


def get_round_examples(w: World) -> list[pb.GetRoundRequest]:
    done = w.done.round_id
    ids = [done, "", "not-a-round", done + "\n", "nih.0123456789ab", "x" * 5000, "ü" * 3000]
    return [pb.GetRoundRequest(round_id=i) for i in ids]


# --- GetSelection and StreamSelection ------------------------------------------------------------
def selection_requests(w: World) -> st.SearchStrategy[pb.GetSelectionRequest]:
    n = w.done.num_candidates
    valid = {
        "round_id": st.just(w.done.round_id),
        "strategy": st.sampled_from(STRATEGIES),  # mvaal: this round has no M-VAAL sampler
        "budget": st.integers(1, n),
        "page_size": st.integers(0, 40) | st.just(MAX_PAGE),
        "page_token": st.just("") | st.integers(0, n).map(str),  # past the budget: refused
    }
    hostile = {
        "round_id": round_ids(w),
        "strategy": hostile_text(),
        "budget": st.sampled_from([0, -1, n + 1]) | int64s(),
        "page_size": st.sampled_from([-1, MAX_PAGE + 1]) | st.integers(-INT32 - 1, INT32),
        "page_token": st.sampled_from(["-1", " 5", "+5", "5 ", "\u0665", "5.0", "0x5", "1_0",
                                       "9" * 30, "007"]) | hostile_text(),
    }  # fmt: skip
    return with_faults(pb.GetSelectionRequest, valid, hostile)


def _selection_problem(w: World, r: pb.GetSelectionRequest, paged: bool) -> Expect | None:
    if paged and not 1 <= (r.page_size or DEFAULT_PAGE) <= MAX_PAGE:
        return invalid("page_size")
    if r.strategy not in STRATEGIES:
        return invalid("unknown strategy")
    problem = _round_problem(w, r.round_id)
    if problem:
        return problem
    if r.strategy not in w.done.strategies:  # the pool has one modality: VAAL, not M-VAAL
        return Expect(FP, (f"not {r.strategy}",))
    if r.budget < 1:
        return invalid("budget must be >= 1")
    if r.budget > w.done.num_candidates:
        return invalid("is larger than the")
    if paged:
        token = r.page_token or "0"
        if not re.fullmatch(r"[0-9]{1,18}", token) or int(token) > r.budget:
            return invalid("page_token")
    return None


def _check_samples(w: World, samples: Sequence[pb.SelectedSample], first_rank: int) -> None:
    assert [s.rank for s in samples] == list(range(first_rank, first_rank + len(samples)))
    assert not {s.sample_id for s in samples} - w.queried  # candidates only, never labeled


def expect_get_selection(w: World, r: pb.GetSelectionRequest) -> Expect:
    problem = _selection_problem(w, r, paged=True)
    if problem:
        return problem
    offset, size = int(r.page_token or 0), r.page_size or DEFAULT_PAGE

    def page(found: pb.SelectionPage) -> None:
        end = min(offset + size, r.budget)
        assert found.total == r.budget
        assert len(found.samples) == end - offset
        assert found.next_page_token == (str(end) if end < r.budget else "")
        _check_samples(w, found.samples, offset + 1)

    return Expect(OK, check=page)


def expect_stream_selection(w: World, r: pb.GetSelectionRequest) -> Expect:
    problem = _selection_problem(w, r, paged=False)
    if problem:
        return problem

    def stream(found: list[pb.SelectedSample]) -> None:
        assert len(found) == r.budget
        _check_samples(w, found, 1)

    return Expect(OK, check=stream)


def selection_examples(w: World) -> list[pb.GetSelectionRequest]:
    R = pb.GetSelectionRequest  # noqa: N806
    done, n = w.done.round_id, w.done.num_candidates
    return [
        R(round_id=done, strategy="gestalt_node", budget=n, page_size=MAX_PAGE),
        R(round_id=done, strategy="vaal", budget=7, page_size=3, page_token="6"),
        R(round_id=done, strategy="random", budget=5, page_token="5"),
        R(round_id=done, strategy="nope", budget=5),
        R(round_id=done, strategy="GESTALT_NODE", budget=5),
        R(round_id=done, strategy="mvaal", budget=5),
        R(round_id=done, strategy="gestalt_node", budget=0),
        R(round_id=done, strategy="gestalt_node", budget=-(2**63)),
        R(round_id=done, strategy="gestalt_node", budget=n + 1),
        R(round_id=done, strategy="gestalt_node", budget=2**63 - 1),
        R(round_id=done, strategy="gestalt_node", budget=5, page_size=MAX_PAGE + 1),
        R(round_id=done, strategy="gestalt_node", budget=5, page_size=-1),
        R(round_id=done, strategy="gestalt_node", budget=5, page_token="x"),
        R(round_id=done, strategy="gestalt_node", budget=5, page_token="-1"),
        R(round_id=done, strategy="gestalt_node", budget=5, page_token=" 1"),
        R(round_id=done, strategy="gestalt_node", budget=5, page_token="\u0663"),
        R(round_id=done, strategy="gestalt_node", budget=5, page_token="6"),
        R(round_id="nih.0123456789ab", strategy="gestalt_node", budget=5),
        R(round_id="../../etc", strategy="gestalt_node", budget=5),
        R(round_id=done + "\n", strategy="gestalt_node", budget=5),
    ]


# --- SubmitLabels --------------------------------------------------------------------------------
@st.composite
def submit_requests(draw: st.DrawFn, w: World) -> pb.SubmitLabelsRequest:
    ids, k = [str(i) for i in w.env.ids], w.num_classes
    truth = {str(w.env.ids[i]): tuple(row.astype(float)) for i, row in enumerate(w.env.labels)}
    specials = st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 2.0, -1.0, -0.0, 1e38])
    items: list[tuple[str, list[float]]] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(
            ["same", "conflict", "fresh", "bad", "ghost", "twice", "twice-other"]
        ))  # fmt: skip
        seed = ids[draw(st.integers(0, LABELED - 1))]
        other = ids[draw(st.integers(LABELED, POOL_SIZE - 1))]
        if kind == "same":
            items.append((seed, list(truth[seed])))
        elif kind == "conflict":
            flipped, at = list(truth[seed]), draw(st.integers(0, k - 1))
            flipped[at] = 1.0 - flipped[at]
            items.append((seed, flipped))
        elif kind == "fresh":
            labels = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=k, max_size=k))
            items.append((other, labels))
        elif kind == "bad":
            values = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=k, max_size=k))
            if draw(st.booleans()):
                values[draw(st.integers(0, k - 1))] = draw(specials | st.floats(width=32))
            else:
                values = values[: draw(st.integers(0, k - 1))] or values * 2
            items.append((draw(st.sampled_from([seed, other])), values))
        elif kind == "ghost":
            items.append((draw(st.sampled_from(["ghost.png", ""]) | hostile_text()), [0.0] * k))
        elif items:  # the same sample again, with its labels or others
            sample, values = items[draw(st.integers(0, len(items) - 1))]
            again = values if kind == "twice" else [1.0 - v for v in values] or [1.0]
            items.append((sample, again))
    labels = [pb.SampleLabels(sample_id=s, labels=v) for s, v in items]
    valid = {
        "pool_id": st.just("nih"),
        "labels": st.just(labels),
        "round_id": st.sampled_from(["", "", w.done.round_id]),
        "submitter": st.sampled_from(["fuzz", ""]),
    }
    hostile = {
        "pool_id": st.just("ghost") | hostile_text(),
        "round_id": round_ids(w),
        "submitter": hostile_text(),
    }
    request: pb.SubmitLabelsRequest = draw(with_faults(pb.SubmitLabelsRequest, valid, hostile))
    return request


def expect_submit(w: World, r: pb.SubmitLabelsRequest) -> Expect:
    # Labels travel as float32: what the server sees is what the message holds.
    items = [(item.sample_id, tuple(float(v) for v in item.labels)) for item in r.labels]
    if r.round_id:  # labels name the round that queried them
        problem = _round_problem(w, r.round_id)
        if problem:
            return problem
        if r.pool_id != "nih":
            return invalid("ranked pool")
        if {sample for sample, _ in items} - w.queried:
            return Expect(FP, ("not queried",))
    if not items:
        return invalid("no labels")
    problem = _pool_problem(w, r.pool_id)
    if problem:
        return problem
    if {sample for sample, _ in items} - w.ids:
        return Expect(NF, ("not in pool",))
    words: list[str] = []
    new: dict[str, tuple[float, ...]] = {}
    for sample, values in items:
        if len(values) != w.num_classes:
            words.append(f"expected {w.num_classes} labels")
        elif any(v not in (0.0, 1.0) for v in values):
            words.append("labels must be 0 or 1")
        elif new.setdefault(sample, values) != values:
            words.append("appears twice with different labels")
    if words:
        return invalid(*words)
    stored = w.stored.get(r.pool_id, {})
    if any(stored.get(sample, values) != values for sample, values in new.items()):
        return Expect(AE, ("already have different labels",))
    if set(new) - set(stored):
        return Expect(OK, writes=True)

    def unchanged(found: pb.SubmitLabelsResponse) -> None:
        assert (found.accepted, found.unchanged, found.num_labeled) == (0, len(new), len(stored))

    return Expect(OK, check=unchanged)


def submit_examples(w: World) -> list[pb.SubmitLabelsRequest]:
    ids, k = [str(i) for i in w.env.ids], w.num_classes
    truth = [row.astype(float).tolist() for row in w.env.labels]

    def req(items: list[tuple[str, list[float]]], pool: str = "nih", round_id: str = "") -> Any:
        labels = [pb.SampleLabels(sample_id=s, labels=v) for s, v in items]
        return pb.SubmitLabelsRequest(pool_id=pool, labels=labels, round_id=round_id)

    conflict = [1.0 - v for v in truth[0]]
    fresh = (ids[LABELED], truth[LABELED])  # would be stored alone: only with a refused one
    return [
        req([(ids[0], truth[0]), (ids[1], truth[1])]),
        req([(ids[0], truth[0])] * 3000),  # a huge request of one identical resubmission
        req([]),
        req([(ids[0], truth[0])], pool="ghost"),
        req([(ids[0], truth[0])], pool="../../etc"),
        req([("ghost.png", [0.0] * k)]),
        req([(ids[0], conflict)]),
        req([fresh, (ids[0], conflict)]),  # refused whole: the fresh one is not stored
        req([fresh, (ids[1], [math.nan] * k)]),
        req([fresh, (ids[1], [math.inf] + [0.0] * (k - 1))]),
        req([fresh, (ids[1], [0.5] * k)]),
        req([fresh, (ids[1], [1.0])]),
        req([fresh, (ids[1], [0.0] * (k + 1))]),
        req([fresh, (ids[LABELED + 1], [0.0] * k), (ids[LABELED + 1], [1.0] * k)]),
        req([fresh], round_id="not-a-round"),
        req([fresh], round_id="nih.0123456789ab"),
        req([fresh], pool="loopfuzz", round_id=w.done.round_id),
        req([(ids[0], truth[0])], round_id=w.done.round_id),  # labeled, never queried
        req([fresh, (ids[LABELED + 1], [2.0] * k)], round_id=w.done.round_id),
    ]


# --- GetNeighbours -------------------------------------------------------------------------------
def neighbour_requests(w: World) -> st.SearchStrategy[pb.GetNeighboursRequest]:
    valid = {
        "round_id": st.just(w.done.round_id),
        "sample_id": st.sampled_from([str(i) for i in w.env.ids]),
        "k": st.integers(1, 140) | st.just(MAX_K),
    }
    hostile = {
        "round_id": round_ids(w),
        "sample_id": hostile_text(),
        "k": st.sampled_from([0, -1, MAX_K + 1]) | st.integers(-INT32 - 1, INT32),
    }
    return with_faults(pb.GetNeighboursRequest, valid, hostile)


def expect_neighbours(w: World, r: pb.GetNeighboursRequest) -> Expect:
    if not 1 <= r.k <= MAX_K:
        return invalid("k must be")
    problem = _round_problem(w, r.round_id)
    if problem:
        return problem
    if r.sample_id not in w.ids:
        return Expect(NF, ("not in pool",))

    def nearest(found: pb.Neighbours) -> None:
        names = [n.sample_id for n in found.neighbours]
        assert len(names) == min(r.k, POOL_SIZE - 1)
        assert r.sample_id not in names
        distances = [n.distance for n in found.neighbours]
        assert distances == sorted(distances)

    return Expect(OK, check=nearest)


def neighbour_examples(w: World) -> list[pb.GetNeighboursRequest]:
    R = pb.GetNeighboursRequest  # noqa: N806
    done, first = w.done.round_id, str(w.env.ids[0])
    return [
        R(round_id=done, sample_id=first, k=5),
        R(round_id=done, sample_id=first, k=MAX_K),
        R(round_id=done, sample_id=first, k=0),
        R(round_id=done, sample_id=first, k=MAX_K + 1),
        R(round_id=done, sample_id=first, k=-(2**31)),
        R(round_id=done, sample_id="ghost.png", k=3),
        R(round_id=done, sample_id="", k=3),
        R(round_id="nih.0123456789ab", sample_id=first, k=3),
        R(round_id="", sample_id=first, k=3),
    ]


# --- StartLoop -----------------------------------------------------------------------------------
LOOP_DEFAULTS: dict[str, Any] = {
    "loop_id": "", "strategy": "gestalt_node", "budget": 10, "initial_labeled": 100,
    "max_rounds": 0, "max_labels": 0, "label_source": "oracle", "images_key": "images",
    "validation_split": "val", "test_split": "", "oracle_split": "train", "seed": 0,
    "poll_seconds": 5.0,
}  # fmt: skip
MODEL_DEFAULTS: dict[str, Any] = {
    "arch": "resnet18", "image_size": 0, "epochs": 6, "saliency": "deep_taylor",
    "latent_dim": 32, "autoencoder_epochs": 15, "sampler_epochs": 0, "sampler_width": 16,
    "workers": 2, "cpus_per_worker": 0.0, "use_gpu": False,
}  # fmt: skip
ARCHS, SALIENCY = ("resnet18", "densenet121", "small_cnn"), ("deep_taylor", "grad_cam", "gradient")


def loop_config(r: pb.LoopConfig) -> dict[str, Any]:
    """The proto's rule: a zero or empty field means its default."""
    config = {name: getattr(r, name) or default for name, default in LOOP_DEFAULTS.items()}
    config["loop_id"] = config["loop_id"] or f"{r.pool_id}-loop"[:63]
    model = {name: getattr(r.model, name) or d for name, d in MODEL_DEFAULTS.items()}
    return {**config, "pool_id": r.pool_id, "data": r.data, "model": model}


def _config_problems(c: dict[str, Any]) -> list[str]:
    """What the proto and LoopConfig document as unusable, before anything is looked up."""
    m, found = c["model"], []
    if m["arch"] not in ARCHS:
        found.append("arch must be")
    if m["saliency"] not in SALIENCY:
        found.append("saliency must be")
    for name in ("epochs", "latent_dim", "autoencoder_epochs", "sampler_width", "workers"):
        if m[name] < 1:
            found.append(f"model.{name} must be >= 1")
    if m["sampler_epochs"] < 0 or m["image_size"] < 0:
        found.append("must be >= 0 (0: default)")
    if not (math.isfinite(m["cpus_per_worker"]) and m["cpus_per_worker"] >= 0):
        found.append("cpus_per_worker")
    for name in ("pool_id", "loop_id"):
        if not POOL_FORM.fullmatch(c[name]):
            found.append(f"{name} {c[name]!r}"[:60])
    if not c["data"]:
        found.append("data is required")
    elif not c["data"].startswith("/"):
        found.append("absolute path")
    if c["strategy"] not in STRATEGIES:
        found.append("unknown strategy")
    elif c["strategy"] == "mvaal":
        found.append("use strategy 'vaal'")
    elif c["strategy"] in ("vaal", "hybrid") and m["sampler_epochs"] < 1:
        found.append("needs a sampler")
    if c["budget"] < 1 or c["initial_labeled"] < 2:
        found.append("budget must be >= 1")
    if c["max_rounds"] < 0 or c["max_labels"] < 0:
        found.append("max_rounds and max_labels must be >= 0")
    elif not (c["max_rounds"] or c["max_labels"]):
        found.append("stopping rule")
    elif c["max_labels"] and c["max_labels"] <= c["initial_labeled"]:
        found.append("must exceed initial_labeled")
    if c["label_source"] not in ("oracle", "external"):
        found.append("label_source must be")
    if not (math.isfinite(c["poll_seconds"]) and 0 < c["poll_seconds"] <= 3600):
        found.append("poll_seconds must be")
    if c["seed"] < 0:
        found.append("seed must be >= 0")
    return found


def _split_problem(w: World, c: dict[str, Any], split: str) -> str:
    images, labels = f"{split}_{c['images_key']}", f"{split}_labels"
    if images not in w.data_arrays or labels not in w.data_arrays:
        return f"no array '{images if images not in w.data_arrays else labels}'"
    shape = w.data_arrays[images]
    if len(shape) != 3:
        return "must be [N, H, W]"
    if shape[1:] != (64, 64):  # the pool's
        return "the pool's are"
    return ""


def _runner_problems(w: World, c: dict[str, Any]) -> list[str]:
    """What the loop's coordinator refuses: the config against the pool and its data."""
    m, found = c["model"], []
    size = m["image_size"] or 64
    if not 28 <= size <= 320:
        found.append(f"model.image_size {size} must lie in")
    elif m["sampler_epochs"] > 0 and size % 16:
        found.append("divisible by 16")
    if c["initial_labeled"] >= POOL_SIZE:
        found.append("smaller than the pool")
    if c["data"] == w.garbage_file:
        return [*found, "not a readable .npz archive"]
    if c["data"] != DATA:
        return [*found, "no such file"]
    splits = [c["validation_split"], *([c["test_split"]] if c["test_split"] else [])]
    if c["label_source"] == "oracle":
        splits.append(c["oracle_split"])
    found += [problem for split in splits if (problem := _split_problem(w, c, split))]
    if c["label_source"] == "oracle" and c["oracle_split"] != "train":  # the pool's split
        found.append("has no labels for")
    return found


def expect_start_loop(w: World, r: pb.LoopConfig) -> Expect:
    c = loop_config(r)
    problems = _config_problems(c)
    if problems:
        return invalid(*problems)
    if c["pool_id"] not in w.pools:
        return Expect(NF, ("no pool",))
    if c["loop_id"] in w.loops:
        if c != w.loops[c["loop_id"]]:
            return Expect(AE, ("exists with another config",))

        def same_loop(found: pb.Loop) -> None:
            assert (found.loop_id, found.state) == (c["loop_id"], pb.LOOP_STATE_INITIAL_LABELS)

        return Expect(OK, check=same_loop)
    problems = _runner_problems(w, c)
    return invalid(*problems) if problems else Expect(OK, writes=True)


def _loop_values(w: World) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "pool_id": st.sampled_from(["loopfuzz", "nih", "ghost", "", "Bad Pool", "nih\n", "a" * 64]),
        "data": st.sampled_from([DATA, "", "nih.npz", "/no/such/data.npz", w.garbage_file,
                                 DATA + "\x00"]),
        "loop_id": st.sampled_from(["", "loopfuzz-loop", "nih-loop", "Bad", "x\n", "a" * 64]),
        "strategy": st.sampled_from(["", *STRATEGIES, "best"]),
        "budget": st.sampled_from([0, 1, 10, -1, INT64, -INT64 - 1]),
        "initial_labeled": st.sampled_from([0, 1, 2, POOL_SIZE - 1, POOL_SIZE, INT64, -5]),
        "max_rounds": st.sampled_from([0, 1, -1, INT32]),
        "max_labels": st.sampled_from([0, 50, 101, 200, -1, INT64]),
        "label_source": st.sampled_from(["", "oracle", "external", "robot"]),
        "images_key": st.sampled_from(["", "images_64", "images", "labels", "filenames", "x"]),
        "validation_split": st.sampled_from(["", "val", "train", "test", "nope"]),
        "test_split": st.sampled_from(["", "test", "val", "nope"]),
        "oracle_split": st.sampled_from(["", "train", "val", "nope"]),
        "seed": st.sampled_from([0, 1, -1, INT64, -INT64 - 1]),
        "poll_seconds": st.sampled_from([0.0, 0.5, -1.0, math.nan, math.inf, 3600.0, 3600.5,
                                         1e300, -0.0, 60.0]),
    }  # fmt: skip


def _model_values() -> dict[str, st.SearchStrategy[Any]]:
    ints = st.sampled_from([0, 1, -1, INT32, -INT32 - 1])
    return {
        "arch": st.sampled_from(["", *ARCHS, "vgg"]),
        "image_size": st.sampled_from([0, 32, 48, 40, 27, 321, -1, INT32]),
        "epochs": ints,
        "saliency": st.sampled_from(["", *SALIENCY, "x"]),
        "latent_dim": ints,
        "autoencoder_epochs": ints,
        "sampler_epochs": st.sampled_from([0, 1, -1]),
        "sampler_width": ints,
        "workers": ints,
        "cpus_per_worker": st.sampled_from([0.0, 0.25, -1.0, math.nan, math.inf]),
        "use_gpu": st.booleans(),
    }


@st.composite
def loop_requests(draw: st.DrawFn, w: World) -> pb.LoopConfig:
    """Either fields drawn one by one, or the running loop's request with a few changed."""
    values, model_values = _loop_values(w), _model_values()
    request = pb.LoopConfig()
    if draw(st.booleans()):
        request.CopyFrom(w.loop_request)
        names = draw(st.lists(st.sampled_from(sorted(values) + sorted(model_values)),
                              max_size=2, unique=True))  # fmt: skip
    else:
        names = sorted(values) + sorted(model_values)
    for name in names:
        if name in values:
            setattr(request, name, draw(values[name]))
        else:
            setattr(request.model, name, draw(model_values[name]))
    return request


def start_loop_examples(w: World) -> list[pb.LoopConfig]:
    def changed(**fields: Any) -> pb.LoopConfig:
        request = pb.LoopConfig()
        request.CopyFrom(w.loop_request)
        for name, value in fields.items():
            if name in MODEL_DEFAULTS:
                setattr(request.model, name, value)
            else:
                setattr(request, name, value)
        return request

    return [
        changed(),  # the same config again: the loop, unchanged
        changed(loop_id="loopfuzz-loop"),  # the same after defaults
        changed(budget=11),
        changed(data="/no/such/data.npz"),  # another config under the taken id wins
        changed(loop_id="fresh-loop", data="/no/such/data.npz"),
        changed(loop_id="fresh-loop", data=w.garbage_file),
        changed(loop_id="fresh-loop", images_key="images"),
        changed(loop_id="fresh-loop", images_key="labels"),
        changed(loop_id="fresh-loop", validation_split="nope"),
        changed(loop_id="fresh-loop", label_source="oracle", oracle_split="val"),
        changed(loop_id="fresh-loop", initial_labeled=POOL_SIZE),
        changed(loop_id="fresh-loop", image_size=27),
        changed(loop_id="fresh-loop", image_size=40, sampler_epochs=1),
        changed(pool_id="ghost", loop_id="ghost-loop"),
        changed(seed=-1),
        changed(poll_seconds=math.nan),
        changed(cpus_per_worker=math.inf),
        changed(budget=-(2**63)),
        changed(pool_id="nih\n", loop_id=""),
        changed(data="nih.npz"),
        changed(strategy="mvaal"),
        changed(max_rounds=0),
    ]


# --- GetLoop and Check ---------------------------------------------------------------------------
def get_loop_requests(w: World) -> st.SearchStrategy[pb.GetLoopRequest]:
    loop_ids = st.one_of(st.sampled_from(["loopfuzz-loop", "nih-loop", "ghost"]), hostile_text())
    return st.builds(pb.GetLoopRequest, loop_id=loop_ids)


def expect_get_loop(w: World, r: pb.GetLoopRequest) -> Expect:
    if not POOL_FORM.fullmatch(r.loop_id):
        return invalid("is not a loop id")
    if r.loop_id not in w.loops:
        return Expect(NF, ("no loop",))

    def loop(found: pb.Loop) -> None:
        assert (found.loop_id, len(found.query_ids)) == (r.loop_id, 2)
        assert loop_config(found.config) == w.loops[r.loop_id]

    return Expect(OK, check=loop)


def get_loop_examples(w: World) -> list[pb.GetLoopRequest]:
    ids = ["loopfuzz-loop", "", "ghost-loop", "Not A Loop", "loopfuzz-loop\n", "../loops", "x" * 70]
    return [pb.GetLoopRequest(loop_id=i) for i in ids]


def check_requests(w: World) -> st.SearchStrategy[health_pb2.HealthCheckRequest]:
    services = st.one_of(st.sampled_from(["", API, HEALTH, API + "\n"]), hostile_text())
    return st.builds(health_pb2.HealthCheckRequest, service=services)


def expect_check(w: World, r: health_pb2.HealthCheckRequest) -> Expect:
    if r.service not in ("", API):  # the health checking protocol: an unknown service
        return Expect(NF, ("unknown service",))

    def serving(found: health_pb2.HealthCheckResponse) -> None:
        assert found.status == health_pb2.HealthCheckResponse.SERVING

    return Expect(OK, check=serving)


def check_examples(w: World) -> list[health_pb2.HealthCheckRequest]:
    return [health_pb2.HealthCheckRequest(service=s) for s in ("", API, HEALTH, "x" * 5000)]


CODES_ALL = frozenset({OK, INV, NF, FP, AE})
METHODS = {
    m.name: m
    for m in [
        Method("RegisterPool", pb.RegisterPoolRequest, pb.Pool, register_requests,
               expect_register, register_examples, frozenset({OK, INV, NF, AE})),
        Method("StartRound", pb.StartRoundRequest, pb.Round, start_round_requests,
               expect_start_round, start_round_examples, frozenset({OK, INV, NF})),
        Method("GetRound", pb.GetRoundRequest, pb.Round, get_round_requests, expect_get_round,
               get_round_examples, frozenset({OK, INV, NF})),
        Method("GetSelection", pb.GetSelectionRequest, pb.SelectionPage, selection_requests,
               expect_get_selection, selection_examples, frozenset({OK, INV, NF, FP}),
               max_examples=80),
        Method("StreamSelection", pb.GetSelectionRequest, pb.SelectedSample,
               selection_requests, expect_stream_selection, selection_examples,
               frozenset({OK, INV, NF, FP}), streaming=True),
        Method("SubmitLabels", pb.SubmitLabelsRequest, pb.SubmitLabelsResponse,
               submit_requests, expect_submit, submit_examples, CODES_ALL, max_examples=80),
        Method("GetNeighbours", pb.GetNeighboursRequest, pb.Neighbours, neighbour_requests,
               expect_neighbours, neighbour_examples, frozenset({OK, INV, NF})),
        Method("StartLoop", pb.LoopConfig, pb.Loop, loop_requests, expect_start_loop,
               start_loop_examples, frozenset({OK, INV, NF, AE}), max_examples=60),
        Method("GetLoop", pb.GetLoopRequest, pb.Loop, get_loop_requests, expect_get_loop,
               get_loop_examples, frozenset({OK, INV, NF}), max_examples=30),
        Method("Check", health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse,
               check_requests, expect_check, check_examples, frozenset({OK, NF}),
               service=HEALTH, max_examples=30),
    ]
}  # fmt: skip
FUZZ = settings(
    deadline=None,
    database=None,  # the deployment differs per run: replaying old examples means nothing
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)  # fmt: skip


def _run(w: World, method: Method, data: bytes, shown: object, expect: Expect) -> None:
    if expect.writes:
        TALLY.skipped[method.name] += 1
        assume(False)
    _judge(w, method, data, expect, shown)


# --- 1. hypothesis-built requests ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(METHODS))
def test_built_requests_get_the_documented_code(world: World, name: str) -> None:
    method = METHODS[name]
    before = Counter({c: n for (m, c), n in TALLY.codes.items() if m == name})
    tried = TALLY.tried[name]
    for request in method.examples(world):
        expect = method.expect(world, request)
        assert not expect.writes, request
        _judge(world, method, request.SerializeToString(), expect, request)

    @settings(FUZZ, max_examples=method.max_examples)
    @given(request=method.requests(world))
    def fuzz(request: Any) -> None:
        _run(world, method, request.SerializeToString(), request, method.expect(world, request))

    fuzz()
    seen = Counter({c: n for (m, c), n in TALLY.codes.items() if m == name}) - before
    assert TALLY.tried[name] - tried >= method.max_examples // 2, TALLY.table()
    assert {Code[c] for c in seen} == method.codes, seen  # every code it can give, no other
    _normal_calls_still_work(world)


# --- 2. malformed protobuf bytes -----------------------------------------------------------------
def _wire_chunks() -> st.SearchStrategy[bytes]:
    """A field with a wire type its field number may not have, or a nonsense tag."""
    tags = st.builds(lambda number, wire: bytes([(number << 3 | wire) & 0x7F]),
                     st.integers(1, 15), st.integers(0, 7))  # fmt: skip
    payloads = st.sampled_from([b"", b"\x01", b"\xff" * 11, b"\x05abc", b"\x02\xff\xfe",
                                b"\x00" * 8, b"\x7f", struct.pack("<d", math.nan)])  # fmt: skip
    return st.builds(bytes.__add__, tags, payloads)


@st.composite
def malformed(draw: st.DrawFn, w: World, method: Method) -> bytes:
    how = draw(st.sampled_from(["random", "truncated", "flipped", "wire", "appended"]))
    if how == "random":
        return draw(st.binary(max_size=300))
    valid: bytes = draw(method.requests(w)).SerializeToString()
    if how == "truncated":
        return valid[: draw(st.integers(0, max(len(valid) - 1, 0)))]
    if how == "flipped" and valid:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    chunks = draw(st.lists(_wire_chunks(), min_size=1, max_size=4))
    return valid + b"".join(chunks) if how == "appended" else b"".join(chunks) + valid


def _expect_bytes(w: World, method: Method, data: bytes) -> Expect:
    try:
        request = method.request.FromString(data)
    except DecodeError:
        return Expect(Code.UNKNOWN, (UNPARSABLE,))
    return method.expect(w, request)


@pytest.mark.parametrize("name", list(METHODS))
def test_malformed_bytes_never_take_the_server_down(world: World, name: str) -> None:
    method = METHODS[name]
    tried = TALLY.tried[name]
    for data in (b"\xff", b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"\x08\x01", b"\x0b", b""):
        _judge(world, method, data, _expect_bytes(world, method, data), data)

    @settings(FUZZ, max_examples=30)
    @given(data=malformed(world, method))
    def fuzz(data: bytes) -> None:
        _run(world, method, data, data, _expect_bytes(world, method, data))

    fuzz()
    assert TALLY.tried[name] - tried >= 20
    assert TALLY.unparsable[name] >= 1
    _normal_calls_still_work(world)


# --- 3. hostile pool files -----------------------------------------------------------------------
def _shard(ids: Sequence[object], images: np.ndarray, names: Sequence[str] = ("a", "b")) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.asarray(ids), images=images, label_names=np.asarray(names))
    return buffer.getvalue()


def _with_zip_field(data: bytes, central: int, local: int, value: bytes) -> bytes:
    """``data`` (a zip) with a field of its first member's two headers overwritten."""
    out = bytearray(data)
    at = data.index(b"PK\x01\x02")
    out[at + central : at + central + len(value)] = value
    out[local : local + len(value)] = value
    return bytes(out)


def _hostile_pools() -> list[tuple[str, dict[str, bytes], grpc.StatusCode, tuple[str, ...]]]:
    """(case, files of the pool folder, code, words the message must hold, all of them)."""
    pixels = np.zeros((4, 8, 8), dtype=np.uint8)
    good = _shard(["a", "b", "c", "d"], pixels)
    floats = np.full((4, 8, 8), 0.5)
    nan, inf, big = floats.copy(), floats.copy(), floats.copy()
    nan[1, 2, 3], inf[2, 0, 0], big[0, 0, 0] = np.nan, -np.inf, 3.0
    npy = io.BytesIO()
    np.save(npy, pixels)
    pickled = io.BytesIO()
    np.savez(pickled, ids=np.array(["a", None], dtype=object), images=pixels[:2],
             label_names=np.array(["a"]))  # fmt: skip
    bomb = _with_zip_field(good, 24, 22, struct.pack("<I", 0xF0000000))  # 'unpacks' to 4 GB
    method99 = _with_zip_field(good, 10, 8, struct.pack("<H", 99))  # no such compression
    empty_zip = b"PK\x05\x06" + b"\x00" * 18
    k = "shard-000000.npz"
    inv = INV
    return [
        ("truncated", {k: good[: len(good) // 2]}, inv, (k, "not a readable .npz shard")),
        ("not an npz", {k: b"just some text\n"}, inv, (k, "not a readable .npz shard")),
        ("empty file", {k: b""}, inv, (k, "not a readable .npz shard")),
        ("an .npy", {k: npy.getvalue()}, inv, (k, "not a readable .npz shard")),
        ("zip bomb", {k: bomb}, inv, (k, "unpack to")),
        ("unknown compression", {k: method99}, inv, (k, "NotImplementedError")),
        ("pickled objects", {k: pickled.getvalue()}, inv, (k, "allow_pickle")),
        ("NaN", {k: _shard(list("abcd"), nan)}, inv, (k, "NaN or inf")),
        ("inf", {k: _shard(list("abcd"), inf)}, inv, (k, "NaN or inf")),
        ("floats over 1", {k: _shard(list("abcd"), big)}, inv, (k, "[0, 1]")),
        ("int16", {k: _shard(list("abcd"), pixels.astype(np.int16))}, inv, (k, "uint8 or float")),
        ("2-d images", {k: _shard(list("abcd"), pixels.reshape(4, 64))}, inv, (k, "[n, H, W]")),
        ("5-d images", {k: _shard(list("abcd"), pixels[:, None, None])}, inv, (k, "[n, H, W]")),
        ("2 channels", {k: _shard(list("abcd"), np.zeros((4, 2, 8, 8), np.uint8))}, inv,
         (k, "C 1 or 3")),
        ("zero-width", {k: _shard(list("abcd"), np.zeros((4, 8, 0), np.uint8))}, inv,
         (k, "empty axis")),
        ("ids vs images", {k: _shard(list("abc"), pixels)}, inv, (k, "[n, H, W]")),
        ("int ids", {k: _shard([1, 2, 3, 4], pixels)}, inv, (k, "ids must be non-empty strings")),
        ("empty id", {k: _shard(["a", "", "c", "d"], pixels)}, inv, (k, "non-empty strings")),
        ("ids [n, 1]", {k: _shard([["a"], ["b"], ["c"], ["d"]], pixels)}, inv, (k, "ids [n]")),
        ("repeat in shard", {k: _shard(["a", "b", "a", "d"], pixels)}, inv,
         (k, "repeat within the shard", "'a'")),
        ("repeat across", {k: good, "shard-000001.npz": _shard(["x", "c"], pixels[:2])}, inv,
         ("repeat across shards", "'c'", k, "shard-000001.npz")),
        ("zero samples", {k: _shard([], pixels[:0])}, inv, (k, "empty")),
        ("no label names", {k: _shard(list("abcd"), pixels, ())}, inv, (k, "label_names")),
        ("0-d label names", {k: _shard(list("abcd"), pixels, "ab")}, inv, (k, "label_names")),
        ("repeated names", {k: _shard(list("abcd"), pixels, ("a", "a"))}, inv,
         (k, "label_names repeat")),
        ("names differ", {k: good, "shard-000001.npz": _shard(["x"], pixels[:1], ("a", "c"))},
         inv, ("shard-000001.npz", "label names")),
        ("sizes differ", {k: good, "shard-000001.npz": _shard(["x"], pixels[:1, :, :7])}, inv,
         ("shard-000001.npz", "images are (8, 7)")),
        ("dtypes differ", {k: good, "shard-000001.npz": _shard(["x"], floats[:1])}, inv,
         ("shard-000001.npz", "float64")),
        ("no arrays", {k: empty_zip}, inv, (k, "shard lacks")),
        ("odd file name", {"a shard.npz": good}, inv, ("a shard.npz", "shard paths may use only")),
        ("no shards", {"readme.txt": b"nothing"}, NF, ("no .npz shards",)),
    ]  # fmt: skip


def test_hostile_pool_files_are_refused_with_the_file_and_the_problem(
    world: World, tmp_path: Path
) -> None:
    method = METHODS["RegisterPool"]
    for number, (case, files, code, words) in enumerate(_hostile_pools()):
        folder = tmp_path / f"pool-{number}"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        expect = Expect(code, words)
        request = pb.RegisterPoolRequest(pool_id=f"hostile-{number}", uri=str(folder))
        code_got, details, _ = _send(world, method, request.SerializeToString())
        TALLY.tried["RegisterPool"] += 1
        TALLY.codes["RegisterPool", code_got.name] += 1
        assert code_got == expect.code, (case, details)
        assert all(word in details for word in words), (case, details)
    # Nothing was registered, no folder was created for a missing one, and the service serves.
    missing = tmp_path / "not-there"
    request = pb.RegisterPoolRequest(pool_id="hostile-missing", uri=str(missing))
    assert _send(world, method, request.SerializeToString())[0] == NF
    assert not missing.exists()
    for number in range(len(_hostile_pools())):
        start = pb.StartRoundRequest(pool_id=f"hostile-{number}", model_id=world.env.model_id)
        assert _send(world, METHODS["StartRound"], start.SerializeToString())[0] == NF
    _normal_calls_still_work(world)


def test_shards_changed_after_registration_fail_their_rounds_cleanly(
    world: World, tmp_path: Path
) -> None:
    """A shard truncated, and one holding other samples, after their pools were registered:
    each round fails with the file and the problem, selections from it are refused, and the
    service's other rounds go on answering."""
    env, c = world.env, world.env.client
    names = [f"c{i}" for i in range(world.num_classes)]
    images = np.random.default_rng(0).integers(0, 255, (16, 64, 64), dtype=np.uint8)
    started: dict[str, str] = {}
    for pool_id, problem in [("late-truncated", "not a readable"),
                             ("late-swapped", "sample ids differ")]:  # fmt: skip
        pool = tmp_path / pool_id
        write_pool(LocalStore(pool), "", [f"{pool_id}-{i}" for i in range(16)], images, names, 8)
        assert c.register_pool(pool_id, str(pool)).num_samples == 16
        world.pools[pool_id] = str(pool)
        shard = pool / "shard-000001.npz"
        if pool_id == "late-truncated":
            shard.write_bytes(shard.read_bytes()[:100])
        else:  # a valid shard, of other samples
            shard.write_bytes(shard_bytes([f"other-{i}" for i in range(8)], images[8:], names))
        started[problem] = c.start_round(pool_id, env.model_id).round_id
    for problem, round_id in started.items():
        failed = c.wait_round(round_id, timeout=600, progress=False)
        assert failed.state == pb.ROUND_STATE_FAILED, failed
        assert "shard-000001.npz" in failed.message, failed.message
        assert problem in failed.message, failed.message
        for request, method in [
            (pb.GetSelectionRequest(round_id=round_id, strategy="random", budget=3),
             "GetSelection"),
            (pb.GetNeighboursRequest(round_id=round_id, sample_id="late-truncated-0", k=3),
             "GetNeighbours"),
        ]:  # fmt: skip
            code, details, _ = _send(world, METHODS[method], request.SerializeToString())
            assert (code, f"round {round_id} failed" in details) == (FP, True), details
    _normal_calls_still_work(world)
    assert len(c.neighbours(world.done.round_id, str(env.ids[3]), 4)) == 4


def test_the_tally_has_no_crash_and_no_wrong_code(world: World) -> None:
    """Whatever ran in this module: zero crashes, zero wrong codes, and it still serves."""
    assert not TALLY.failures, "\n".join(TALLY.failures)
    assert all(code not in ("INTERNAL",) for (_, code) in TALLY.codes), TALLY.table()
    unknown = sum(n for (_, code), n in TALLY.codes.items() if code == "UNKNOWN")
    assert unknown == sum(TALLY.unparsable.values()), TALLY.table()  # only unparsable bytes
    _normal_calls_still_work(world)
    # No refused request stored a label (each is all or nothing), none reached the loop's pool.
    c = world.env.client
    assert c.register_pool("nih", world.env.pool_uri).num_labeled == LABELED
    assert c.register_pool("loopfuzz", world.env.pool_uri).num_labeled == 0


# --- without a server: the pool reader and S3 pools ----------------------------------------------
@settings(max_examples=300, deadline=None, database=None)
@given(
    base=st.sampled_from(["plain", "compressed"]),
    cut=st.none() | st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=6),
)
def test_any_damage_to_a_shard_is_an_invalid_argument(
    base: str, cut: int | None, flips: list[tuple[int, int]]
) -> None:
    rng = np.random.default_rng(0)
    ids = np.array([f"s{i}" for i in range(6)])
    images = rng.integers(0, 255, (6, 8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    save = np.savez if base == "plain" else np.savez_compressed
    save(buffer, ids=ids, images=images, label_names=np.array(["a", "b"]))
    data = bytearray(buffer.getvalue()[:cut])
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    try:
        shard = read_shard(bytes(data), "pool/x.npz")
    except InvalidArgumentError as error:
        message = str(error)
    else:  # damage the checks let through still makes a well-formed shard
        assert (shard.ids.dtype.kind, shard.images.ndim, len(shard.ids)) == ("U", 3, 6)
        return
    assert message.startswith("pool/x.npz: "), message


def test_s3_pools_in_unknown_buckets_are_not_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    catalog = PoolCatalog(LocalStore(tmp_path / "service"))
    with nanio_server(tmp_path / "s3") as endpoint:
        monkeypatch.setenv("GESTALT_S3_ENDPOINT", endpoint.endpoint)
        monkeypatch.setenv("GESTALT_S3_ACCESS_KEY", endpoint.access_key)
        monkeypatch.setenv("GESTALT_S3_SECRET_KEY", endpoint.secret_key)
        monkeypatch.setenv("GESTALT_S3_SECURE", "false")
        with pytest.raises(NotFoundError, match="no such bucket"):
            catalog.register("p", "s3://no-such-bucket-gestalt/pool")
        with pytest.raises(InvalidArgumentError, match="pool uri"):
            catalog.register("p", "s3://Bad_Bucket/pool")
    assert not os.path.exists(tmp_path / "service" / "pools" / "p")
