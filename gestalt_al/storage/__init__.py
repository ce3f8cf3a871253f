"""One object-store interface, two real backends: a local folder (the embedded default) and
any S3 API server through the ``minio`` client (MinIO in production)."""

from gestalt_al.storage.keys import join_key, validate_key
from gestalt_al.storage.location import S3Location, S3Settings, parse_location
from gestalt_al.storage.store import (
    ObjectNotFoundError,
    ObjectStore,
    StoreAccessError,
    StoreUnavailableError,
    open_store,
)

__all__ = [
    "ObjectNotFoundError",
    "ObjectStore",
    "S3Location",
    "S3Settings",
    "StoreAccessError",
    "StoreUnavailableError",
    "join_key",
    "open_store",
    "parse_location",
    "validate_key",
]
