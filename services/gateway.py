"""A TLS gateway in front of Ray Serve's gRPC proxy: the port a hospital exposes.

Ray Serve 2.60's gRPC proxy has no TLS (``gRPCOptions`` has only port, servicers, timeout and
reflection) and accepts messages of up to 2 GiB, so it must never face a network. This process
terminates TLS (optionally mTLS), checks every request against the API's message types, bounds
message sizes and concurrent calls, and forwards the bytes unchanged to the proxy on loopback:
the upstream's responses, status codes, details and metadata come back as they were sent.

It imports no Ray, so it starts in about a second as a sidecar:

    python -m services.gateway --cert /etc/grpc-tls/tls.crt --key /etc/grpc-tls/tls.key \\
        [--client-ca ca.crt] [--listen 0.0.0.0:50443] [--upstream 127.0.0.1:9000]

Metadata values (bearer tokens) are forwarded, never logged."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf.descriptor import FieldDescriptor  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from google.protobuf.message_factory import GetMessageClass  # type: ignore[import-untyped]
from google.protobuf.unknown_fields import UnknownFieldSet  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2

from gestalt_al.v1 import active_learning_pb2

LOG = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_LISTEN = "0.0.0.0:50443"
DEFAULT_UPSTREAM = "127.0.0.1:9000"  # deploy/serve_config.yaml grpc_options.port
DEFAULT_MAX_MESSAGE_BYTES = 4 * MiB  # gRPC's own default; Serve's proxy would take 2 GiB
DEFAULT_MAX_CONCURRENT_RPCS = 64
UNREACHABLE = (
    "the ranking service behind the gateway is not reachable (it may be starting or "
    "restarting); retry later"
)
# Metadata gRPC sets per hop: forwarding the client's would clash with the gateway's own.
_HOP_METADATA = frozenset({"user-agent", "te", "content-type", "host", "connection"})


class GatewayError(Exception):
    """A start-up problem (certificate files, settings, the listen address), worded for the
    person running the gateway: the CLI prints it and exits with code 2."""


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """Where the gateway listens and forwards, its certificate and its limits."""

    cert_file: str | Path  # PEM server certificate (chain), e.g. a kubernetes.io/tls tls.crt
    key_file: str | Path  # its unencrypted PEM private key (tls.key)
    listen: str = DEFAULT_LISTEN
    upstream: str = DEFAULT_UPSTREAM  # Serve's gRPC proxy, plaintext, on loopback
    client_ca_file: str | Path = ""  # set: mTLS, clients need a certificate signed by this CA
    application: str = "gestalt"  # Serve routes by `application` metadata; added when missing
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # each request and response
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS  # more: RESOURCE_EXHAUSTED at once
    reload_certificates: bool = True  # re-read changed files (a rotated Secret) per connection

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_concurrent_rpcs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GatewayError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("listen", "upstream", "application"):
            if not str(getattr(self, name)).strip():
                raise GatewayError(f"{name} must not be empty")

    @property
    def mtls(self) -> bool:
        return bool(str(self.client_ca_file))


@dataclass(frozen=True)
class _Method:
    """A method the gateway forwards: its path and the request type the body must parse as."""

    path: str  # /package.Service/Method
    request_type: Any  # the generated message class
    server_streaming: bool


def forwarded_methods() -> dict[str, _Method]:
    """Every ``gestalt_al.v1.ActiveLearning`` method and ``grpc.health.v1.Health/Check``, from
    the generated descriptors, so a method added to the proto is forwarded without edits here.
    Client-streaming methods are left out: Serve's proxy cannot serve them."""
    services = active_learning_pb2.DESCRIPTOR.services_by_name
    health = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]
    methods = [*services["ActiveLearning"].methods, health]
    return {
        f"/{m.containing_service.full_name}/{m.name}": _Method(
            f"/{m.containing_service.full_name}/{m.name}",
            GetMessageClass(m.input_type),
            m.server_streaming,
        )
        for m in methods
        if not m.client_streaming
    }


# --- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _TlsFiles:
    """The PEM bytes gRPC is given, read and checked together."""

    cert: bytes
    key: bytes
    client_ca: bytes | None


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GatewayError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise GatewayError(f"{what} {path}: is a directory, not a PEM file") from None
    except OSError as error:
        raise GatewayError(f"{what} {path}: cannot read it ({error.strerror})") from None
    if b"-----BEGIN " not in data:
        raise GatewayError(f"{what} {path}: not a PEM file (no -----BEGIN line)")
    return data


def _encrypted_key() -> NoReturn:
    # OpenSSL asks for a key's passphrase through this callback (instead of a terminal prompt).
    raise GatewayError("the key is encrypted: gRPC needs an unencrypted PEM key")


def load_tls_files(config: GatewayConfig) -> _TlsFiles:
    """Read and check the certificate, key and client CA; ``GatewayError`` says which file is
    wrong and how. gRPC itself would accept a mismatched pair and fail every handshake later,
    so the pair is checked here with the standard library's OpenSSL."""
    cert_path, key_path = Path(config.cert_file), Path(config.key_file)
    cert = _read_pem(cert_path, "certificate")
    key = _read_pem(key_path, "key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_path, key_path, password=_encrypted_key)
    except GatewayError as error:
        raise GatewayError(f"key {key_path}: {error}") from None
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            raise GatewayError(
                f"key {key_path} does not belong to certificate {cert_path} (mismatched pair)"
            ) from None
        raise GatewayError(
            f"certificate {cert_path} with key {key_path}: not a valid PEM certificate and "
            f"private key ({error.reason or error})"
        ) from None
    client_ca = None
    if config.mtls:
        ca_path = Path(config.client_ca_file)
        client_ca = _read_pem(ca_path, "client CA")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca_path)
        except ssl.SSLError as error:
            raise GatewayError(
                f"client CA {ca_path}: not a valid PEM certificate ({error.reason or error})"
            ) from None
    return _TlsFiles(cert, key, client_ca)


def _certificate_configuration(files: _TlsFiles) -> Any:
    return grpc.ssl_server_certificate_configuration(
        [(files.key, files.cert)], root_certificates=files.client_ca
    )


def _signature(config: GatewayConfig) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is replaced: a Secret's rotation swaps a symlink, which
    ``stat`` follows to the new file."""
    paths = [config.cert_file, config.key_file] + ([config.client_ca_file] if config.mtls else [])
    stats = [os.stat(path) for path in paths]
    return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)


class _CertificateReloader:
    """gRPC calls this before every TLS handshake: when the files changed, new connections get
    the new certificate (connections already open keep theirs). Files that are missing or
    invalid (a rotation half done) keep the current certificate and are logged once."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        try:
            self._seen = _signature(config)
        except OSError:  # gone since they were read: the next handshake looks again
            self._seen = ()

    def __call__(self) -> Any:
        try:
            signature = _signature(self._config)
            if signature == self._seen:
                return None
            self._seen = signature
            files = load_tls_files(self._config)
        except (OSError, GatewayError) as error:
            LOG.warning("certificate files changed but cannot be used, keeping the current "
                        "certificate: %s", error)  # fmt: skip
            return None
        except Exception:  # a callback of gRPC's core: it must never raise
            LOG.exception("keeping the current certificate: re-reading the files failed")
            return None
        LOG.info("certificate files changed: new connections use the new certificate")
        return _certificate_configuration(files)


def server_credentials(config: GatewayConfig) -> Any:
    """TLS credentials; with a client CA, mTLS (client certificates required and verified)."""
    files = load_tls_files(config)
    if not config.reload_certificates:
        return grpc.ssl_server_credentials(
            [(files.key, files.cert)],
            root_certificates=files.client_ca,
            require_client_auth=config.mtls,
        )
    return grpc.dynamic_ssl_server_credentials(
        _certificate_configuration(files),
        _CertificateReloader(config),
        require_client_authentication=config.mtls,
    )


# --- request checks ---------------------------------------------------------------------------


def invalid_request(method: _Method, body: bytes) -> str | None:
    """Why ``body`` is not a valid request of ``method``, or None when it is. Besides what the
    parser refuses, a declared field sent with another wire type is refused: parsers keep it
    as an unknown field, so the service would silently see the field unset."""
    name = method.request_type.DESCRIPTOR.name
    try:
        message = method.request_type.FromString(body)
        misplaced = _misplaced_field(message)
    except DecodeError as error:
        reason = str(error).rpartition(": ")[2] or "cannot be parsed"
        return f"{method.path}: the request body is not a valid {name} ({reason})"
    except Exception as error:  # e.g. nesting deeper than the parser allows
        return f"{method.path}: the request body is not a valid {name} ({type(error).__name__})"
    if misplaced:
        return f"{method.path}: the request body is not a valid {name} ({misplaced})"
    return None


def _misplaced_field(message: Any, prefix: str = "") -> str | None:
    """The first declared field, at any depth, that arrived with the wrong wire type."""
    declared = message.DESCRIPTOR.fields_by_number
    for unknown in UnknownFieldSet(message):
        field = declared.get(unknown.field_number)
        if field is not None:
            return (
                f"field {prefix}{field.name} (number {field.number}) has wire type "
                f"{unknown.wire_type}, which its type {_type_name(field)} never has"
            )
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        children: Iterable[Any]
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
            children = value.values()
        elif field.is_repeated:
            children = value
        else:
            children = [value]
        for child in children:
            found = _misplaced_field(child, f"{prefix}{field.name}.")
            if found:
                return found
    return None


def _type_name(field: Any) -> str:
    if field.message_type is not None:
        return str(field.message_type.name)
    names = {getattr(FieldDescriptor, n): n for n in dir(FieldDescriptor) if n.startswith("TYPE_")}
    return str(names.get(field.type, field.type)).removeprefix("TYPE_").lower()


# --- forwarding -------------------------------------------------------------------------------


def _forwardable(key: str) -> bool:
    """Metadata a hop passes on: not HTTP/2 pseudo-headers or gRPC's reserved keys."""
    return not key.startswith((":", "grpc-")) and key not in _HOP_METADATA


def _filtered(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[Any, ...]:
    return tuple((key, value) for key, value in metadata or () if _forwardable(key))


class Forwarder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Routes every call: known methods are checked and forwarded as bytes, anything else is
    UNIMPLEMENTED naming the method. Request and response bodies are never deserialized on
    the way through (only parsed once to check them), so nothing is re-encoded."""

    def __init__(self, config: GatewayConfig, channel: Any) -> None:
        self._config = config
        self._channel = channel
        self._methods = forwarded_methods()
        self._unary = {
            path: channel.unary_unary(path) for path, m in self._methods.items()
            if not m.server_streaming
        }  # fmt: skip
        self._streams = {
            path: channel.unary_stream(path) for path, m in self._methods.items()
            if m.server_streaming
        }  # fmt: skip

    def service(self, details: Any) -> Any:
        method = self._methods.get(details.method)
        if method is None:
            return grpc.stream_stream_rpc_method_handler(self._unknown(str(details.method)))
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._logged(method, self._stream))
        return grpc.unary_unary_rpc_method_handler(self._logged(method, self._unary_call))

    def _unknown(self, path: str) -> Callable[[Any, Any], Awaitable[None]]:
        async def unimplemented(requests: Any, context: Any) -> None:
            shown = path if len(path) <= 200 else path[:200] + "..."
            LOG.debug("unknown method %r: UNIMPLEMENTED", shown)
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {shown!r} is not served here: the gateway forwards "
                "/gestalt_al.v1.ActiveLearning/<method> and /grpc.health.v1.Health/Check",
            )

        return unimplemented

    def _logged(
        self, method: _Method, handler: Callable[[_Method, bytes, Any], Awaitable[Any]]
    ) -> Callable[[bytes, Any], Awaitable[Any]]:
        """One debug line per call (method, status, seconds, metadata keys, never values), and
        no exception escapes as anything but a status."""

        async def call(body: bytes, context: Any) -> Any:
            started = time.monotonic()
            outcome = "OK"
            try:
                return await handler(method, body, context)
            except grpc.aio.AbortError:
                outcome = str(context.code())
                raise
            except asyncio.CancelledError:
                outcome = "CANCELLED by the client"
                raise
            except Exception:
                outcome = "INTERNAL"
                LOG.exception("%s: the gateway failed", method.path)
                await context.abort(grpc.StatusCode.INTERNAL, "the gateway failed; see its log")
            finally:
                keys = sorted({key for key, _ in context.invocation_metadata() or ()})
                LOG.debug("%s: %s in %.3f s (%d bytes in; metadata keys %s)", method.path,
                          outcome, time.monotonic() - started, len(body), keys)  # fmt: skip

        return call

    async def _check(self, method: _Method, body: bytes, context: Any) -> tuple[Any, ...]:
        """Refuse an invalid body; else the metadata to send upstream."""
        problem = invalid_request(method, body)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        metadata = _filtered(context.invocation_metadata())
        if not any(key == "application" for key, _ in metadata):
            metadata = (*metadata, ("application", self._config.application))
        return metadata

    async def _unary_call(self, method: _Method, body: bytes, context: Any) -> bytes:
        metadata = await self._check(method, body, context)
        call = self._unary[method.path](body, metadata=metadata, timeout=context.time_remaining())
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as error:
            await self._relay_error(error, method, context)
        finally:
            call.cancel()  # no-op once done; stops the upstream call if the client went away
        await _send_initial(await call.initial_metadata(), context)
        context.set_trailing_metadata(_filtered(await call.trailing_metadata()))
        return response

    async def _stream(self, method: _Method, body: bytes, context: Any) -> None:
        metadata = await self._check(method, body, context)
        call = self._streams[method.path](body, metadata=metadata, timeout=context.time_remaining())
        try:
            await _send_initial(await call.initial_metadata(), context)
            async for response in call:
                await context.write(response)
        except grpc.aio.AioRpcError as error:
            await self._relay_error(error, method, context, initial_sent=True)
        finally:
            call.cancel()
        context.set_trailing_metadata(_filtered(await call.trailing_metadata()))

    async def _relay_error(
        self, error: Any, method: _Method, context: Any, initial_sent: bool = False
    ) -> NoReturn:
        """The upstream's status, details and trailing metadata, unchanged; except when the
        upstream could not be reached at all: then the channel is not READY, gRPC's own
        "failed to connect" text would only confuse a client, and ours says to retry."""
        code = error.code()
        if code == grpc.StatusCode.UNAVAILABLE and not self._connected():
            LOG.warning("%s: upstream %s not reachable: %s", method.path, self._config.upstream,
                        error.details())  # fmt: skip
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNREACHABLE)
        if not initial_sent:
            await _send_initial(error.initial_metadata(), context)
        await context.abort(code, error.details() or "", _filtered(error.trailing_metadata()))
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def _connected(self) -> bool:
        return bool(self._channel.get_state(False) == grpc.ChannelConnectivity.READY)


async def _send_initial(metadata: Any, context: Any) -> None:
    forwarded = _filtered(metadata)
    if forwarded:
        await context.send_initial_metadata(forwarded)


def _channel_options(config: GatewayConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]


async def start_gateway(config: GatewayConfig) -> Any:
    """Check the certificate files, bind ``config.listen`` and start serving; returns the
    started ``grpc.aio.Server`` (stop it with ``await server.stop(grace)``; the upstream
    channel is closed with it). Raises ``GatewayError`` for bad files or an address in use."""
    credentials = server_credentials(config)
    channel = grpc.aio.insecure_channel(
        config.upstream,
        options=[
            *_channel_options(config),
            # After a Serve restart, reconnect within seconds (gRPC's default backoff
            # grows to 2 minutes); calls in between fail fast with UNAVAILABLE.
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.min_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ],
    )
    server = grpc.aio.server(
        handlers=[Forwarder(config, channel)],
        options=[
            *_channel_options(config),
            ("grpc.so_reuseport", 0),  # a second gateway on the same port fails, not shares
        ],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    try:
        port = server.add_secure_port(config.listen, credentials)
    except RuntimeError as error:
        await channel.close()
        raise GatewayError(f"cannot listen on {config.listen}: {error}") from None
    await server.start()
    channel.get_state(True)  # connect upstream now rather than on the first call
    closer = asyncio.create_task(_close_when_stopped(server, channel))
    _CLOSERS.add(closer)  # referenced until done: asyncio keeps only weak references to tasks
    closer.add_done_callback(_CLOSERS.discard)
    mode = "mTLS (client certificates required)" if config.mtls else "TLS"
    LOG.info(
        "gateway listening on %s (port %d, %s%s), forwarding to %s (plaintext), application "
        "%r when a call names none; limits: %d bytes per message, %d concurrent calls",
        config.listen, port, mode,
        ", certificates re-read on change" if config.reload_certificates else "",
        config.upstream, config.application, config.max_message_bytes,
        config.max_concurrent_rpcs,
    )  # fmt: skip
    return server


_CLOSERS: set[asyncio.Task[None]] = set()


async def _close_when_stopped(server: Any, channel: Any) -> None:
    try:
        await server.wait_for_termination()
    finally:
        await channel.close()


# --- command line -----------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway",
        description="TLS gateway in front of Ray Serve's gRPC proxy (gestalt_al.v1).",
    )
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help="host:port [%(default)s]")
    parser.add_argument(
        "--upstream", default=DEFAULT_UPSTREAM, help="Serve's gRPC proxy [%(default)s]"
    )
    parser.add_argument("--cert", required=True, help="PEM server certificate (tls.crt)")
    parser.add_argument("--key", required=True, help="its unencrypted PEM key (tls.key)")
    parser.add_argument("--client-ca", default="", help="PEM CA: require client certificates")
    parser.add_argument("--application", default="gestalt", help="[%(default)s]")
    parser.add_argument(
        "--max-message-bytes", type=_positive, default=DEFAULT_MAX_MESSAGE_BYTES,
        help="largest request or response [%(default)s]",
    )  # fmt: skip
    parser.add_argument(
        "--max-concurrent-rpcs", type=_positive, default=DEFAULT_MAX_CONCURRENT_RPCS,
        help="more calls at once get RESOURCE_EXHAUSTED [%(default)s]",
    )  # fmt: skip
    parser.add_argument(
        "--no-reload", action="store_true", help="do not re-read changed certificate files"
    )
    parser.add_argument(
        "--shutdown-grace-seconds", type=float, default=10.0,
        help="on SIGTERM, how long calls in flight may finish [%(default)s]",
    )  # fmt: skip
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    return parser


async def _serve(config: GatewayConfig, grace: float) -> None:
    server = await start_gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    LOG.info("stopping: calls in flight get %.0f s to finish", grace)
    await server.stop(grace)
    LOG.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """The gateway process; exit code 2 with a one-line message for bad settings or files."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = GatewayConfig(
            listen=args.listen, upstream=args.upstream, cert_file=args.cert, key_file=args.key,
            client_ca_file=args.client_ca, application=args.application,
            max_message_bytes=args.max_message_bytes,
            max_concurrent_rpcs=args.max_concurrent_rpcs, reload_certificates=not args.no_reload,
        )  # fmt: skip
        asyncio.run(_serve(config, args.shutdown_grace_seconds))
    except GatewayError as error:
        parser.error(str(error))  # usage, the message, exit code 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
