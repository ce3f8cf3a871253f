"""Where Ray Train keeps checkpoints: a local folder, or a bucket through the S3 API, with
the same location syntax and environment variables as the object store."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs

from gestalt_al.storage import S3Settings, parse_location


def checkpoint_storage(location: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for ``RunConfig``.

    ``s3://bucket/prefix`` goes to the S3 endpoint from the environment; anything else is a
    local folder (created if missing).
    """
    parsed = parse_location(location)
    if parsed is None:
        path = Path(location).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None
    settings = S3Settings.from_environment(location)
    filesystem = pyarrow.fs.S3FileSystem(
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        endpoint_override=settings.endpoint,
        scheme="https" if settings.secure else "http",
        region=settings.region,
    )
    return "/".join(part for part in (parsed.bucket, parsed.prefix) if part), filesystem
