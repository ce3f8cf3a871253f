"""Where Ray Train keeps checkpoints: a local folder, or a bucket through the S3 API.

Credentials come only from the environment (``GESTALT_S3_ACCESS_KEY`` /
``GESTALT_S3_SECRET_KEY``, set from a Kubernetes secret in the cluster); the endpoint from
``GESTALT_S3_ENDPOINT`` (``host:port``; ``GESTALT_S3_SECURE=0`` for plain HTTP on loopback).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow.fs

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._-]+$")


def checkpoint_storage(location: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for ``RunConfig``.

    ``s3://bucket/prefix`` goes to the S3 endpoint from the environment; anything else is a
    local folder (created if missing).
    """
    if not location.startswith("s3://"):
        path = Path(location).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    parts = [part for part in prefix.split("/") if part]
    valid_parts = all(_PREFIX_PART.match(part) and part not in (".", "..") for part in parts)
    if not _BUCKET.match(bucket) or not valid_parts:
        raise ValueError(
            f"{location!r}: need s3://bucket/prefix with a valid bucket name and prefix parts "
            "of letters, digits, '.', '_' or '-' ('.' and '..' alone are not allowed)"
        )
    missing = [
        name
        for name in ("GESTALT_S3_ENDPOINT", "GESTALT_S3_ACCESS_KEY", "GESTALT_S3_SECRET_KEY")
        if not os.environ.get(name)
    ]
    if missing:
        raise ValueError(f"{location!r} needs the environment variable(s) {missing}")
    filesystem = pyarrow.fs.S3FileSystem(
        access_key=os.environ["GESTALT_S3_ACCESS_KEY"],
        secret_key=os.environ["GESTALT_S3_SECRET_KEY"],
        endpoint_override=os.environ["GESTALT_S3_ENDPOINT"],
        scheme="http" if os.environ.get("GESTALT_S3_SECURE", "1") == "0" else "https",
        region=os.environ.get("GESTALT_S3_REGION", "us-east-1"),
    )
    return "/".join([bucket, *parts]), filesystem
