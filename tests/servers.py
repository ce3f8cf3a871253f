"""Real servers the integration tests talk to: S3 API servers and the TLS gateway on
loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.certs import Pki


@dataclass(frozen=True)
class S3Endpoint:
    endpoint: str  # host:port
    access_key: str
    secret_key: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@contextmanager
def _serving(command: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    process = subprocess.Popen(command, env=os.environ | env)
    try:
        wait_for_port(port, process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def nanio_server(data_dir: Path, port: int | None = None) -> Iterator[S3Endpoint]:
    """nanio: an S3 server that checks SigV4 signatures and answers like MinIO. Stopping it
    and starting another on the same folder and port is an outage the data survives."""
    port = port or free_port()
    endpoint = S3Endpoint(f"127.0.0.1:{port}", "gestalt-test", "gestalt-test-secret")
    command = [_tool("nanio"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--log-level", "warning"]
    keys = {"NANIO_ACCESS_KEY": endpoint.access_key, "NANIO_SECRET_KEY": endpoint.secret_key}
    with _serving(command, port, keys):
        yield endpoint


@contextmanager
def moto_server() -> Iterator[S3Endpoint]:
    """moto's S3 server. Ray Train writes through pyarrow's S3 filesystem, which creates
    directory-marker objects (keys ending in '/'); MinIO and AWS accept them, but nanio (the
    server closest to MinIO otherwise) refuses them, so checkpoints are tested against moto."""
    port = free_port()
    with _serving([_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, {}):
        yield S3Endpoint(f"127.0.0.1:{port}", "gestalt-test", "gestalt-test-secret")


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@contextmanager
def tls_gateway(pki: Pki, upstream: str, *options: str) -> Iterator[str]:
    """The TLS gateway (``python -m services.gateway``) as its own process in front of
    ``upstream`` with the ``Pki``'s server certificate; ``--client-ca`` etc. in ``options``.
    Yields the address clients dial (``localhost``: the name on the certificate)."""
    port = free_port()
    command = [sys.executable, "-m", "services.gateway", "--cert", str(pki.server_cert),
               "--key", str(pki.server_key), "--listen", f"127.0.0.1:{port}",
               "--upstream", upstream, *options]  # fmt: skip
    with _serving(command, port, {}):
        yield f"localhost:{port}"
