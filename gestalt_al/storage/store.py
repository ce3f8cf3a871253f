"""The object-store contract and its two backends.

Errors say what happened in terms a caller can act on: ``ObjectNotFoundError`` (the key is
not there), ``StoreUnavailableError`` (the store cannot be reached after retries, or a local
store's disk is full, over quota or read-only; nothing written before is lost, try again
later), ``StoreAccessError`` (the credentials are refused), ``ValueError`` (a bad key or
location).
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error

from gestalt_al.storage.keys import join_key, validate_key
from gestalt_al.storage.location import S3Location, S3Settings, parse_location

Result = TypeVar("Result")


class ObjectNotFoundError(KeyError):
    pass


class StoreUnavailableError(ConnectionError):
    pass


class StoreAccessError(PermissionError):
    pass


class ObjectStore(Protocol):
    """Keys are relative ('pool/round-1/shard-0.faiss'); every write replaces the object whole
    (readers see the old or the new bytes, never a mix)."""

    description: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...


# Why a local folder takes no more writes, by errno, and what fixes it: a state of the volume
# that an operator changes, after which the same request succeeds.
_UNWRITABLE = {
    errno.ENOSPC: ("is full (no space left on device)", "free space on it"),
    errno.EDQUOT: ("is over its disk quota", "raise the quota or free space"),
    errno.EROFS: ("is on a read-only file system", "remount it read-write"),
}


class LocalStore:
    """A folder: the embedded default for one machine. A write goes to a staging file in the
    object's folder and is renamed over the object once complete, so a write that fails (a
    full disk) leaves the old object or none, never part of one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.description = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    @contextmanager
    def _writing(self, action: str, key: str) -> Iterator[None]:
        """A volume that takes no more writes raises ``StoreUnavailableError`` saying why."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _UNWRITABLE:
                raise
            state, remedy = _UNWRITABLE[exc.errno]
            raise StoreUnavailableError(
                f"object store {self.description} {state} while trying to {action} {key!r}; "
                f"{remedy}, then retry"
            ) from exc

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._writing("write", key):
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, staging = tempfile.mkstemp(dir=path.parent, prefix=".staging-")
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.replace(staging, path)
            except BaseException:
                Path(staging).unlink(missing_ok=True)
                raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {key!r} in {self.description}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".staging-")
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._writing("delete", key):
            path.unlink(missing_ok=True)


class S3Store:
    """A bucket (and key prefix) on any S3 API server, through the ``minio`` client.

    Transient failures (refused connections, timeouts, HTTP 5xx) are retried with
    exponential backoff by the HTTP client; when retries run out the call raises
    ``StoreUnavailableError``.
    """

    def __init__(
        self,
        location: S3Location,
        settings: S3Settings,
        retries: int = 4,
        backoff_seconds: float = 0.2,
        timeout_seconds: float = 10.0,
    ) -> None:
        retry = urllib3.Retry(
            total=retries, backoff_factor=backoff_seconds,
            status_forcelist=(500, 502, 503, 504), allowed_methods=None,
        )  # fmt: skip
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds), retries=retry
        )
        self.client = Minio(
            settings.endpoint, access_key=settings.access_key, secret_key=settings.secret_key,
            secure=settings.secure, region=settings.region, http_client=http,
        )  # fmt: skip
        self.location = location
        self.description = f"s3://{location.bucket}/{location.prefix}"

    def _key(self, key: str) -> str:
        return join_key(self.location.prefix, validate_key(key))

    def _call(self, action: str, key: str, operation: Callable[[], Result]) -> Result:
        try:
            return operation()
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFoundError(f"no object {key!r} in {self.description}") from exc
            if exc.code == "NoSuchBucket":
                raise StoreUnavailableError(
                    f"bucket {self.location.bucket!r} does not exist on {self.description}; "
                    "create it (mc mb) or fix the location"
                ) from exc
            if exc.code in ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"):
                raise StoreAccessError(
                    f"{self.description} refused the credentials ({exc.code}); check "
                    "GESTALT_S3_ACCESS_KEY and GESTALT_S3_SECRET_KEY"
                ) from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(
                f"object store {self.description} unreachable while trying to {action} {key!r} "
                f"({type(exc).__name__}); nothing was lost, retry when it is back"
            ) from exc

    def put(self, key: str, data: bytes) -> None:
        name = self._key(key)
        self._call("write", key, lambda: self.client.put_object(
            self.location.bucket, name, io.BytesIO(data), len(data)))  # fmt: skip

    def get(self, key: str) -> bytes:
        name = self._key(key)

        def read() -> bytes:
            response = self.client.get_object(self.location.bucket, name)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return self._call("read", key, read)

    def exists(self, key: str) -> bool:
        name = self._key(key)
        try:
            self._call("check", key, lambda: self.client.stat_object(self.location.bucket, name))
        except ObjectNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        start = self._key(prefix) + "/" if prefix else (self.location.prefix + "/").lstrip("/")
        strip = len(self.location.prefix) + 1 if self.location.prefix else 0

        def names() -> list[str]:
            found = self.client.list_objects(self.location.bucket, prefix=start, recursive=True)
            return sorted(str(item.object_name)[strip:] for item in found)

        return self._call("list", prefix or "/", names)

    def delete(self, key: str) -> None:
        name = self._key(key)
        self._call("delete", key, lambda: self.client.remove_object(self.location.bucket, name))


def open_store(location: str) -> ObjectStore:
    """``s3://bucket/prefix`` (settings from the environment) or a local folder."""
    parsed = parse_location(location)
    if parsed is None:
        return LocalStore(location)
    return S3Store(parsed, S3Settings.from_environment(location))
