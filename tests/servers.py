"""Real servers the integration tests talk to: a local Ray cluster and an S3 endpoint."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


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
def moto_server() -> Iterator[S3Endpoint]:
    """moto's S3 server. Ray Train writes through pyarrow's S3 filesystem, which creates
    directory-marker objects (keys ending in '/'); MinIO and AWS accept them, but nanio (the
    server closest to MinIO otherwise) refuses them, so checkpoints are tested against moto."""
    port = free_port()
    moto = str(Path(sys.executable).with_name("moto_server"))
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)])
    try:
        wait_for_port(port, process)
        yield S3Endpoint(f"127.0.0.1:{port}", "gestalt-test", "gestalt-test-secret")
    finally:
        process.terminate()
        process.wait(timeout=10)
