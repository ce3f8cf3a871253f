"""Where data lives: ``s3://bucket/prefix`` (endpoint and keys from the environment, set from
a Kubernetes Secret in the cluster) or a local folder. Shared by the object store and by Ray
Train's checkpoint storage, so both read the same variables."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from gestalt_al.storage.keys import validate_key

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ENVIRONMENT = ("GESTALT_S3_ENDPOINT", "GESTALT_S3_ACCESS_KEY", "GESTALT_S3_SECRET_KEY")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or a validated key prefix without a trailing '/'


@dataclass(frozen=True)
class S3Settings:
    """``GESTALT_S3_ENDPOINT`` (host:port), ``GESTALT_S3_ACCESS_KEY``,
    ``GESTALT_S3_SECRET_KEY``, ``GESTALT_S3_SECURE`` (0 for plain HTTP on loopback),
    ``GESTALT_S3_REGION`` (default us-east-1)."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool
    region: str

    def __repr__(self) -> str:  # never print the secret
        return (
            f"S3Settings(endpoint={self.endpoint!r}, secure={self.secure}, region={self.region!r})"
        )

    @classmethod
    def from_environment(cls, needed_for: str) -> S3Settings:
        missing = [name for name in ENVIRONMENT if not os.environ.get(name)]
        if missing:
            raise ValueError(f"{needed_for!r} needs the environment variable(s) {missing}")
        return cls(
            endpoint=os.environ["GESTALT_S3_ENDPOINT"],
            access_key=os.environ["GESTALT_S3_ACCESS_KEY"],
            secret_key=os.environ["GESTALT_S3_SECRET_KEY"],
            secure=_flag("GESTALT_S3_SECURE", default=True),
            region=os.environ.get("GESTALT_S3_REGION", "us-east-1"),
        )


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: use 1/true/yes/on or 0/false/no/off")


def parse_location(location: str) -> S3Location | None:
    """The bucket and prefix of an ``s3://`` location, None for a local folder."""
    if not location.startswith("s3://"):
        return None
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    try:
        valid_prefix = not prefix or validate_key(prefix) == prefix
    except ValueError:
        valid_prefix = False
    if not _BUCKET.match(bucket) or not valid_prefix:
        raise ValueError(
            f"{location!r}: need s3://bucket/prefix with a valid bucket name and prefix parts "
            "of letters, digits and . _ = + - ('.' and '..' alone are not allowed)"
        )
    return S3Location(bucket, prefix)
