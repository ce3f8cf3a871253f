"""The TLS gateway (``services.gateway``) in front of a stand-in for Serve's gRPC proxy: a real
``grpc.aio`` server implementing the API with known answers, so no Ray is needed and the file
runs in seconds. Gateways and the stand-in run on one event loop in a background thread;
clients are the project's synchronous ones (``ServiceClient``, ``ClientTLS``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gestalt_al.client import ClientTLS, ServiceClient
from gestalt_al.v1 import active_learning_pb2 as pb
from gestalt_al.v1 import active_learning_pb2_grpc as pb_grpc
from services.gateway import (
    UNREACHABLE,
    GatewayConfig,
    GatewayError,
    load_tls_files,
    start_gateway,
)
from tests.certs import CertificateAuthority, Pki, make_pki
from tests.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent
SERVICE = "/gestalt_al.v1.ActiveLearning"
REGISTER = f"{SERVICE}/RegisterPool"
TOKEN = "s3cr3t-gateway-token-0123456789"  # must never appear in a log
KiB = 1024
T = TypeVar("T")
Code = grpc.StatusCode


class LoopThread:
    """An asyncio loop in a daemon thread: grpc.aio servers live on it while the test thread
    makes blocking calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class Upstream(pb_grpc.ActiveLearningServicer):  # type: ignore[misc]
    """Stands in for Serve's proxy: known answers, known errors, a stream, slow and hanging
    calls; records what each call carried."""

    def __init__(self) -> None:
        self.calls = 0
        self.metadata: dict[str, list[tuple[str, Any]]] = {}  # by pool_id / round_id
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def RegisterPool(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.calls += 1
        self.metadata[request.pool_id] = [(k, v) for k, v in context.invocation_metadata()]
        await context.send_initial_metadata((("x-upstream", "initial"),))
        context.set_trailing_metadata((("x-upstream-trailer", "done"),))
        return pb.Pool(pool_id=request.pool_id, uri=request.uri, num_samples=42, num_shards=3)

    async def GetRound(self, request: Any, context: Any) -> Any:  # noqa: N802
        """round_id: ``deadline`` (answers the time remaining it saw), ``slow`` (1.5 s),
        ``hang`` (until cancelled), ``error:<CODE>`` (that status), else a finished round."""
        self.calls += 1
        round_id = request.round_id
        if round_id == "deadline":
            return pb.Round(round_id=round_id, message=repr(context.time_remaining()))
        if round_id == "slow":
            await asyncio.sleep(1.5)
        if round_id == "hang":
            self.started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if round_id.startswith("error:"):
            name = round_id.removeprefix("error:")
            await context.abort(Code[name], *_upstream_error(name))
        return pb.Round(round_id=round_id, state=pb.ROUND_STATE_DONE, shards_total=3)

    async def GetSelection(self, request: Any, context: Any) -> Any:  # noqa: N802
        """``budget`` samples of about 1 KiB each: a response of any size."""
        self.calls += 1
        uri = "s3://bucket/" + "x" * 1000
        samples = [pb.SelectedSample(sample_id=f"s{i}", uri=uri) for i in range(request.budget)]
        return pb.SelectionPage(samples=samples, total=request.budget)

    async def StreamSelection(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        """``budget`` samples; strategy ``fail``: FAILED_PRECONDITION after two of them."""
        self.calls += 1
        for i in range(request.budget):
            if request.strategy == "fail" and i == 2:
                await context.abort(Code.FAILED_PRECONDITION, *_upstream_error("mid-stream"))
            yield _sample(i)


def _upstream_error(name: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """Details and trailing metadata the stand-in sends with an error."""
    return f"round r-1: {name} as the service says it", (
        ("x-error-detail", "shard 3"),
        ("x-error-bin", b"\x00\xff"),
    )


def _sample(i: int) -> Any:
    return pb.SelectedSample(sample_id=f"s{i}", rank=i + 1, score=1 / (i + 1), uri="s3://b/p")


class HealthCheck(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def serve_upstream(servicer: Upstream, port: int) -> Any:
    server = grpc.aio.server()
    pb_grpc.add_ActiveLearningServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthCheck(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


@dataclass
class Harness:
    loop: LoopThread
    pki: Pki
    upstream: Upstream
    upstream_address: str
    servers: list[Any] = field(default_factory=list)

    def gateway(self, **settings: Any) -> str:
        """Start a gateway (the test PKI's server certificate, this upstream, ``settings``
        over GatewayConfig's defaults); returns its target, ``localhost:<port>``."""
        port = free_port()
        values: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}",
            "upstream": self.upstream_address,
            "cert_file": self.pki.server_cert,
            "key_file": self.pki.server_key,
        }
        config = GatewayConfig(**(values | settings))
        self.servers.append(self.loop.run(start_gateway(config)))
        return f"localhost:{port}"

    def start_upstream(self, servicer: Upstream, port: int) -> Any:
        server = self.loop.run(serve_upstream(servicer, port))
        self.servers.append(server)
        return server


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    loop = LoopThread()
    upstream, port = Upstream(), free_port()
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    harness = Harness(loop, pki, upstream, f"127.0.0.1:{port}")
    harness.start_upstream(upstream, port)
    try:
        yield harness
    finally:
        for server in harness.servers:
            loop.run(server.stop(None))
        loop.close()


@pytest.fixture(scope="module")
def tls_gateway(harness: Harness) -> str:
    return harness.gateway()


@pytest.fixture(scope="module", params=[False, True], ids=["static", "reloading"])
def mtls_gateway(harness: Harness, request: pytest.FixtureRequest) -> str:
    """Both kinds of gRPC credentials: fixed, and re-read when the files change."""
    return harness.gateway(client_ca_file=harness.pki.ca, reload_certificates=request.param)


@pytest.fixture(scope="module")
def limited_gateway(harness: Harness) -> str:
    return harness.gateway(max_message_bytes=64 * KiB, max_concurrent_rpcs=2)


def secure_channel(
    target: str, ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.Channel:
    """Like ``ClientTLS.channel``, but never sharing a connection with an earlier channel
    (gRPC pools connections per process): each one does its own TLS handshake."""
    pair = (key.read_bytes(), cert.read_bytes()) if cert and key else (None, None)
    credentials = grpc.ssl_channel_credentials(ca.read_bytes(), *pair)
    return grpc.secure_channel(target, credentials, [("grpc.use_local_subchannel_pool", 1)])


def call_raw(channel: grpc.Channel, path: str, body: bytes, **kwargs: Any) -> bytes:
    """A unary call with bytes as they are: no serializer stands in the way."""
    response: bytes = channel.unary_unary(path)(body, timeout=5, **kwargs)
    return response


def status_of(call: Any) -> tuple[Any, str]:
    """The code and details of a call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    return error.code(), error.details()


def register(channel: grpc.Channel, pool_id: str = "p") -> Any:
    stub = pb_grpc.ActiveLearningStub(channel)
    return stub.RegisterPool(pb.RegisterPoolRequest(pool_id=pool_id, uri="s3://b/p"), timeout=5)


# --- TLS and mTLS -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_tls_client_with_the_ca_is_served(harness: Harness, tls_gateway: str, host: str) -> None:
    target = tls_gateway.replace("localhost", host)
    client = ServiceClient(target, timeout=5, tls=ClientTLS(harness.pki.ca))
    try:
        pool = client.register_pool("tls-pool", "s3://bucket/pool")
        assert (pool.pool_id, pool.uri, pool.num_samples) == ("tls-pool", "s3://bucket/pool", 42)
    finally:
        client.close()


def test_plaintext_client_is_refused(harness: Harness, tls_gateway: str) -> None:
    calls = harness.upstream.calls
    with grpc.insecure_channel(tls_gateway) as channel:
        code, _ = status_of(lambda: register(channel))
    assert code == Code.UNAVAILABLE
    assert harness.upstream.calls == calls


def test_client_trusting_another_ca_is_refused(harness: Harness, tls_gateway: str) -> None:
    with secure_channel(tls_gateway, harness.pki.other_ca) as channel:
        code, _ = status_of(lambda: register(channel))
    assert code == Code.UNAVAILABLE


def test_mtls_refuses_a_client_without_certificate(harness: Harness, mtls_gateway: str) -> None:
    with secure_channel(mtls_gateway, harness.pki.ca) as channel:
        code, _ = status_of(lambda: register(channel))
    assert code == Code.UNAVAILABLE


def test_mtls_refuses_a_certificate_of_another_ca(harness: Harness, mtls_gateway: str) -> None:
    pki = harness.pki
    with secure_channel(mtls_gateway, pki.ca, pki.other_client_cert, pki.other_client_key) as ch:
        code, _ = status_of(lambda: register(ch))
    assert code == Code.UNAVAILABLE


def test_mtls_serves_a_client_certificate_of_its_ca(harness: Harness, mtls_gateway: str) -> None:
    pki = harness.pki
    tls = ClientTLS(pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    client = ServiceClient(mtls_gateway, timeout=5, token=TOKEN, tls=tls)
    try:
        assert client.register_pool("mtls-pool", "s3://b/p").num_shards == 3
    finally:
        client.close()


def test_rotated_certificate_files_serve_new_connections(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Kubernetes updates a mounted Secret in place: new connections get the new certificate
    without a restart; a half-written rotation keeps the current one."""
    first, second = CertificateAuthority("first"), CertificateAuthority("second")
    cert, key = first.issue("localhost", ["localhost"]).write(tmp_path, "tls")
    target = harness.gateway(cert_file=cert, key_file=key)
    with secure_channel(target, first.write(tmp_path, "first")) as channel:
        assert register(channel).num_samples == 42

    rotated = second.issue("localhost", ["localhost"]).write(tmp_path / "next", "tls")
    os.replace(rotated[0], cert)  # as the kubelet's symlink swap: new files, new inodes
    os.replace(rotated[1], key)
    with secure_channel(target, second.write(tmp_path, "second")) as channel:
        assert register(channel).num_samples == 42
    with secure_channel(target, tmp_path / "first.crt") as channel:
        assert status_of(lambda: register(channel))[0] == Code.UNAVAILABLE

    caplog.set_level(logging.WARNING, logger="services.gateway")
    key.write_bytes(first.issue("localhost").key)  # a key of another certificate
    with secure_channel(target, tmp_path / "second.crt") as channel:
        assert register(channel).num_samples == 42
    assert "keeping the current certificate" in caplog.text
    assert "does not belong" in caplog.text


# --- pass-through -----------------------------------------------------------------------------


def test_health_check_is_forwarded(harness: Harness, tls_gateway: str) -> None:
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_response_and_its_metadata_pass_unchanged(harness: Harness, tls_gateway: str) -> None:
    request = pb.RegisterPoolRequest(pool_id="meta-response", uri="s3://b/p")
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        stub = pb_grpc.ActiveLearningStub(channel)
        response, call = stub.RegisterPool.with_call(request, timeout=5)
        raw = call_raw(channel, REGISTER, request.SerializeToString())
    assert response == pb.Pool(pool_id="meta-response", uri="s3://b/p", num_samples=42,
                               num_shards=3)  # fmt: skip
    assert raw == response.SerializeToString()
    assert ("x-upstream", "initial") in call.initial_metadata()
    assert ("x-upstream-trailer", "done") in call.trailing_metadata()


@pytest.mark.parametrize(
    "name", ["NOT_FOUND", "UNAVAILABLE", "FAILED_PRECONDITION", "ALREADY_EXISTS", "INTERNAL"]
)
def test_upstream_errors_pass_unchanged(harness: Harness, tls_gateway: str, name: str) -> None:
    """Code, details and trailing metadata as the service sent them; the service's own
    UNAVAILABLE (the store is down) is not mistaken for an unreachable upstream."""
    client = ServiceClient(tls_gateway, timeout=5, tls=ClientTLS(harness.pki.ca))
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.get_round(f"error:{name}")
    finally:
        client.close()
    error: Any = info.value
    details, trailing = _upstream_error(name)
    assert (error.code(), error.details()) == (Code[name], details)
    assert set(trailing) <= set(error.trailing_metadata())


def test_stream_passes_unchanged(harness: Harness, tls_gateway: str) -> None:
    client = ServiceClient(tls_gateway, timeout=5, tls=ClientTLS(harness.pki.ca))
    try:
        samples = list(client.stream_selection("r-1", "gestalt_node", budget=50))
        assert samples == [_sample(i) for i in range(50)]
        received: list[Any] = []
        with pytest.raises(grpc.RpcError) as info:
            received.extend(client.stream_selection("r-1", "fail", budget=50))
    finally:
        client.close()
    error: Any = info.value
    assert received == [_sample(0), _sample(1)]
    details, trailing = _upstream_error("mid-stream")
    assert (error.code(), error.details()) == (Code.FAILED_PRECONDITION, details)
    assert set(trailing) <= set(error.trailing_metadata())


def test_request_metadata_reaches_upstream(harness: Harness, tls_gateway: str) -> None:
    """``authorization`` (and any other metadata, binary too) goes through; ``application``
    is added when the client sent none and kept when it did."""
    seen = harness.upstream.metadata
    client = ServiceClient(tls_gateway, timeout=5, token=TOKEN, tls=ClientTLS(harness.pki.ca))
    try:
        client.register_pool("meta-client", "s3://b/p")
    finally:
        client.close()
    assert ("authorization", f"Bearer {TOKEN}") in seen["meta-client"]
    assert [v for k, v in seen["meta-client"] if k == "application"] == ["gestalt"]

    body = pb.RegisterPoolRequest(pool_id="meta-raw").SerializeToString()
    custom = pb.RegisterPoolRequest(pool_id="meta-custom").SerializeToString()
    metadata = (("authorization", "Bearer raw"), ("x-trace-bin", b"\x00\x01\xff"))
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        call_raw(channel, REGISTER, body, metadata=metadata)
        call_raw(channel, REGISTER, custom, metadata=(("application", "other-app"),))
    assert set(metadata) <= set(seen["meta-raw"])
    assert [v for k, v in seen["meta-raw"] if k == "application"] == ["gestalt"]
    assert [v for k, v in seen["meta-custom"] if k == "application"] == ["other-app"]


def test_deadline_is_forwarded(harness: Harness, tls_gateway: str) -> None:
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        stub = pb_grpc.ActiveLearningStub(channel)
        bounded = stub.GetRound(pb.GetRoundRequest(round_id="deadline"), timeout=5)
        unbounded = stub.GetRound(pb.GetRoundRequest(round_id="deadline"))
    # The upstream sees the client's 5 s, give or take grpc's timeout encoding (it rounds up:
    # 5.0097 s was seen once on a loaded machine); unbounded stays unbounded.
    assert 0 < float(bounded.message) <= 5.1
    assert unbounded.message == "None"


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_client_cancellation_reaches_upstream(harness: Harness, tls_gateway: str, how: str) -> None:
    upstream = harness.upstream
    upstream.started.clear()
    upstream.cancelled.clear()
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        stub = pb_grpc.ActiveLearningStub(channel)
        timeout = 30 if how == "cancel" else 1
        future = stub.GetRound.future(pb.GetRoundRequest(round_id="hang"), timeout=timeout)
        assert upstream.started.wait(5)
        if how == "cancel":
            future.cancel()
        assert upstream.cancelled.wait(5), "the upstream call outlived the client's"
        assert register(channel).num_samples == 42


# --- validation -------------------------------------------------------------------------------

MALFORMED = [
    (REGISTER, b"\xff\xff\xff", "RegisterPoolRequest"),
    (REGISTER, b"\x08\x80", "RegisterPoolRequest"),  # a varint cut short
    (REGISTER, b"\x0a\x05ab", "RegisterPoolRequest"),  # a length past the end
    (REGISTER, b"\x0f", "RegisterPoolRequest"),  # wire type 7 does not exist
    (REGISTER, b"\x0a\x02\xff\xfe", "RegisterPoolRequest"),  # pool_id not UTF-8
    (REGISTER, b"\x08\x01", "RegisterPoolRequest"),  # pool_id (a string) sent as a varint
    (f"{SERVICE}/StartLoop", b"\x82\x01\x02\x08\x01", "LoopConfig"),  # model.arch as varint
    (f"{SERVICE}/SubmitLabels", b"\x12\x03\x12\x01\x00", "SubmitLabelsRequest"),
    (f"{SERVICE}/StreamSelection", b"\x18", "GetSelectionRequest"),  # tag without value
    ("/grpc.health.v1.Health/Check", b"\x0a\x01\xff", "HealthCheckRequest"),
]


@pytest.mark.parametrize(("path", "body", "message"), MALFORMED)
def test_malformed_request_is_invalid_argument(
    harness: Harness, tls_gateway: str, path: str, body: bytes, message: str
) -> None:
    calls = harness.upstream.calls
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        if path.endswith("StreamSelection"):
            code, details = status_of(lambda: list(channel.unary_stream(path)(body, timeout=5)))
        else:
            code, details = status_of(lambda: call_raw(channel, path, body))
        assert code == Code.INVALID_ARGUMENT
        assert path in details
        assert f"not a valid {message}" in details
        assert harness.upstream.calls == calls, "a malformed request reached the upstream"
        assert register(channel).num_samples == 42  # still serving


def test_nested_wire_type_is_named(harness: Harness, tls_gateway: str) -> None:
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        _, details = status_of(lambda: call_raw(channel, f"{SERVICE}/StartLoop", MALFORMED[6][1]))
    assert "model.arch" in details


def test_unknown_field_numbers_pass(harness: Harness, tls_gateway: str) -> None:
    """A newer client's extra fields are valid protobuf and go through."""
    body = pb.RegisterPoolRequest(pool_id="newer-client").SerializeToString() + b"\x78\x01"
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        response = pb.Pool.FromString(call_raw(channel, REGISTER, body))
    assert response.pool_id == "newer-client"


@pytest.mark.parametrize(
    "path",
    [
        f"{SERVICE}/DropPool",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ],
)
def test_unknown_method_is_unimplemented(harness: Harness, tls_gateway: str, path: str) -> None:
    with ClientTLS(harness.pki.ca).channel(tls_gateway) as channel:
        code, details = status_of(lambda: call_raw(channel, path, b""))
        streamed = status_of(lambda: list(channel.stream_stream(path)(iter([b""]), timeout=5)))
        assert register(channel).num_samples == 42
    assert code == Code.UNIMPLEMENTED
    assert path in details
    assert streamed == (code, details)


# --- limits -----------------------------------------------------------------------------------


def test_messages_over_the_limit_are_resource_exhausted(
    harness: Harness, limited_gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A request over max_message_bytes is refused by gRPC before the gateway reads it (no
    call is logged), a response over it never reaches the client."""
    big = pb.RegisterPoolRequest(pool_id="big", uri="s3://b/" + "x" * 70 * KiB)
    fits = pb.RegisterPoolRequest(pool_id="fits", uri="s3://b/" + "x" * 60 * KiB)
    caplog.set_level(logging.DEBUG, logger="services.gateway")
    with ClientTLS(harness.pki.ca).channel(limited_gateway) as channel:
        stub = pb_grpc.ActiveLearningStub(channel)
        code, _ = status_of(lambda: stub.RegisterPool(big, timeout=5))
        assert code == Code.RESOURCE_EXHAUSTED
        assert "big" not in harness.upstream.metadata
        assert stub.RegisterPool(fits, timeout=5).pool_id == "fits"
        assert _eventually(lambda: f"{REGISTER}: OK" in caplog.text)
        handled = [r.getMessage() for r in caplog.records if REGISTER in r.getMessage()]
        assert len(handled) == 1, f"the gateway read a message over its limit: {handled}"
        # an upstream response over the limit (100 samples of 1 KiB) never reaches the client
        large = pb.GetSelectionRequest(round_id="r", strategy="random", budget=100)
        code, _ = status_of(lambda: stub.GetSelection(large, timeout=5))
        assert code == Code.RESOURCE_EXHAUSTED
        small = pb.GetSelectionRequest(round_id="r", strategy="random", budget=10)
        assert len(stub.GetSelection(small, timeout=5).samples) == 10


def test_excess_concurrent_calls_are_refused_at_once(
    harness: Harness, limited_gateway: str
) -> None:
    """max_concurrent_rpcs=2 and 5 calls of 1.5 s at once: 3 are refused within a second,
    2 finish, and then the gateway serves as before."""
    with ClientTLS(harness.pki.ca).channel(limited_gateway) as channel:
        stub = pb_grpc.ActiveLearningStub(channel)
        assert register(channel).num_samples == 42  # connected before the clock starts
        ended: dict[int, float] = {}
        started = time.monotonic()
        futures = [
            stub.GetRound.future(pb.GetRoundRequest(round_id="slow"), timeout=10) for _ in range(5)
        ]
        for index, future in enumerate(futures):
            future.add_done_callback(lambda _, i=index: ended.setdefault(i, time.monotonic()))
        codes = [_outcome(future.result)[0] for future in futures]
        assert Counter(codes) == {Code.OK: 2, Code.RESOURCE_EXHAUSTED: 3}
        assert _eventually(lambda: len(ended) == len(futures))  # callbacks run in gRPC's thread
        refused = [i for i, code in enumerate(codes) if code == Code.RESOURCE_EXHAUSTED]
        assert all(ended[i] - started < 1.0 for i in refused), "refusals waited in a queue"
        assert register(channel).num_samples == 42


def test_unreachable_upstream_is_unavailable_until_it_is_back(harness: Harness) -> None:
    port = free_port()
    target = harness.gateway(upstream=f"127.0.0.1:{port}")
    with ClientTLS(harness.pki.ca).channel(target) as channel:
        assert status_of(lambda: register(channel)) == (Code.UNAVAILABLE, UNREACHABLE)
        server = harness.start_upstream(Upstream(), port)
        assert _eventually(lambda: _outcome(lambda: register(channel))[0] == Code.OK)
        harness.loop.run(server.stop(None))
        gone = (Code.UNAVAILABLE, UNREACHABLE)
        assert _eventually(lambda: _outcome(lambda: register(channel)) == gone)
        assert status_of(lambda: register(channel)) == gone


def _outcome(call: Any) -> tuple[Any, str]:
    """Code and details of a call that may succeed."""
    try:
        call()
    except grpc.RpcError as error:
        failed: Any = error
        return failed.code(), failed.details()
    return Code.OK, ""


def _eventually(check: Any, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


# --- configuration, logs and the command line -------------------------------------------------


@pytest.mark.parametrize(
    "settings", [{"max_message_bytes": 0}, {"max_concurrent_rpcs": -1}, {"upstream": " "}]
)
def test_config_refuses_bad_settings(harness: Harness, settings: dict[str, Any]) -> None:
    with pytest.raises(GatewayError, match=next(iter(settings))):
        GatewayConfig(cert_file=harness.pki.server_cert, key_file=harness.pki.server_key,
                      **settings)  # fmt: skip


def test_encrypted_key_is_refused(harness: Harness, tmp_path: Path) -> None:
    """gRPC cannot use a key with a passphrase: say so instead of prompting for one."""
    key = serialization.load_pem_private_key(harness.pki.server_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))  # fmt: skip
    with pytest.raises(GatewayError, match="the key is encrypted"):
        load_tls_files(GatewayConfig(cert_file=harness.pki.server_cert, key_file=encrypted))


def test_address_in_use_is_a_gateway_error(harness: Harness, tls_gateway: str) -> None:
    taken = tls_gateway.replace("localhost", "127.0.0.1")
    config = GatewayConfig(listen=taken, cert_file=harness.pki.server_cert,
                           key_file=harness.pki.server_key)  # fmt: skip
    with pytest.raises(GatewayError, match=f"cannot listen on {taken}"):
        harness.loop.run(start_gateway(config))


def test_logs_never_hold_metadata_values(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up says where, what and how much; each call is logged with its metadata keys,
    but the token (a secret) appears nowhere, not even in failing calls."""
    caplog.set_level(logging.DEBUG, logger="services.gateway")
    target = harness.gateway(client_ca_file=harness.pki.ca, max_concurrent_rpcs=7)
    pki = harness.pki
    tls = ClientTLS(pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    client = ServiceClient(target, timeout=5, token=TOKEN, tls=tls)
    try:
        client.register_pool("logged", "s3://b/p")
        with pytest.raises(grpc.RpcError):
            client.get_round("error:NOT_FOUND")
        bad = (("authorization", f"Bearer {TOKEN}"),)
        with tls.channel(target) as channel:
            status_of(lambda: call_raw(channel, REGISTER, b"\xff", metadata=bad))
            status_of(lambda: call_raw(channel, f"{SERVICE}/Nope", b"", metadata=bad))
    finally:
        client.close()
    # the status of a refused call can reach the client just before its log line is written
    assert _eventually(lambda: f"{REGISTER}: StatusCode.INVALID_ARGUMENT" in caplog.text)
    text = caplog.text
    assert f"listening on {target.replace('localhost', '127.0.0.1')}" in text
    assert harness.upstream_address in text
    assert "mTLS" in text
    assert "7 concurrent calls" in text
    assert f"{REGISTER}: OK" in text
    assert "authorization" in text  # the key is logged: the value is what must not be
    assert TOKEN not in text


def _gateway_command(pki: Pki, *args: str) -> list[str]:
    return [sys.executable, "-m", "services.gateway", "--cert", str(pki.server_cert),
            "--key", str(pki.server_key), *args]  # fmt: skip


def _bad_files(pki: Pki, tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "not-pem.crt").write_text("hello\n")
    broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    (tmp / "broken.crt").write_text(broken)
    return [
        (["--cert", str(tmp / "missing.crt")], "no such file"),
        (["--key", str(tmp)], "is a directory"),
        (["--cert", str(tmp / "not-pem.crt")], "not a PEM file"),
        (["--cert", str(tmp / "broken.crt")], "not a valid PEM certificate"),
        (["--key", str(pki.client_key)], "does not belong to certificate"),
        (["--client-ca", str(tmp / "missing-ca.crt")], "client CA"),
        (["--client-ca", str(tmp / "not-pem.crt")], "client CA"),
        (["--max-message-bytes", "0"], "expected an integer >= 1"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_cli_refuses_bad_files_with_code_2(harness: Harness, tmp_path: Path, case: int) -> None:
    args, message = _bad_files(harness.pki, tmp_path)[case]
    command = _gateway_command(harness.pki, "--listen", f"127.0.0.1:{free_port()}", *args)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_serves_and_stops_on_sigterm(harness: Harness) -> None:
    port = free_port()
    command = _gateway_command(
        harness.pki, "--listen", f"127.0.0.1:{port}", "--upstream", harness.upstream_address,
        "--max-concurrent-rpcs", "9", "--log-level", "DEBUG",
    )  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process)  # type: ignore[arg-type]
        client = ServiceClient(f"localhost:{port}", timeout=5, token=TOKEN,
                               tls=ClientTLS(harness.pki.ca))  # fmt: skip
        try:
            assert client.register_pool("via-cli", "s3://b/p").num_samples == 42
        finally:
            client.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert f"listening on 127.0.0.1:{port}" in stderr
    assert "9 concurrent calls" in stderr
    assert f"{REGISTER}: OK" in stderr
    assert TOKEN not in stderr
    assert ("authorization", f"Bearer {TOKEN}") in harness.upstream.metadata["via-cli"]
