"""Pools registered by reference: ``.npz`` shards under a folder or S3 prefix.

A shard holds ``ids`` ``[n]`` (unique strings), ``images`` ``[n, H, W]`` or ``[n, C, H, W]``
and ``label_names`` ``[K]``. Registration reads every shard once and records a manifest; a
sample's *index* (its position over the shards in key order) is its stable integer id, used in
FAISS indexes and result files. The images never pass through the service's API.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from gestalt_al.service.arrays import load_npy, npy_bytes, npz_bytes
from gestalt_al.service.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
)
from gestalt_al.storage import ObjectNotFoundError, ObjectStore, join_key, open_store

POOL_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SHARD_SUFFIX = ".npz"


def check_pool_id(pool_id: str) -> str:
    if not POOL_ID.match(pool_id):
        raise InvalidArgumentError(
            f"pool id {pool_id!r} must match {POOL_ID.pattern} (lowercase letters, digits, _ -)"
        )
    return pool_id


@dataclass(frozen=True)
class ShardInfo:
    key: str  # relative to the pool's uri
    start: int  # index of its first sample in the pool
    count: int


@dataclass(frozen=True)
class PoolManifest:
    pool_id: str
    uri: str
    shards: tuple[ShardInfo, ...]
    label_names: tuple[str, ...]
    image_shape: tuple[int, ...]  # per sample, e.g. (64, 64)

    @property
    def num_samples(self) -> int:
        return self.shards[-1].start + self.shards[-1].count if self.shards else 0

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PoolManifest:
        raw = json.loads(data)
        return cls(
            pool_id=raw["pool_id"],
            uri=raw["uri"],
            shards=tuple(ShardInfo(**s) for s in raw["shards"]),
            label_names=tuple(raw["label_names"]),
            image_shape=tuple(raw["image_shape"]),
        )

    def shard_uri(self, shard: ShardInfo) -> str:
        return f"{self.uri.rstrip('/')}/{shard.key}"


@dataclass(frozen=True)
class PoolShard:
    ids: np.ndarray  # [n] str
    images: np.ndarray  # [n, H, W] or [n, C, H, W]
    label_names: tuple[str, ...]


def shard_bytes(ids: Sequence[str], images: np.ndarray, label_names: Sequence[str]) -> bytes:
    arrays = {"ids": np.asarray(ids, dtype=str), "images": images}
    return npz_bytes(arrays | {"label_names": np.asarray(label_names)})


def write_pool(
    store: ObjectStore,
    prefix: str,
    ids: Sequence[str],
    images: np.ndarray,
    label_names: Sequence[str],
    shard_size: int,
) -> list[str]:
    """Write a pool as shards of ``shard_size`` samples; returns the keys (zero-padded, so key
    order is pool order)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    keys = []
    for number, start in enumerate(range(0, len(ids), shard_size)):
        key = join_key(prefix, f"shard-{number:06d}{SHARD_SUFFIX}")
        stop = start + shard_size
        store.put(key, shard_bytes(ids[start:stop], images[start:stop], label_names))
        keys.append(key)
    return keys


def read_shard(data: bytes, source: str) -> PoolShard:
    """Parse one shard; anything malformed is an InvalidArgumentError naming ``source``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            missing = {"ids", "images", "label_names"} - set(archive.files)
            if missing:
                raise InvalidArgumentError(f"{source}: shard lacks {sorted(missing)}")
            ids, images = archive["ids"], archive["images"]
            names = tuple(str(n) for n in archive["label_names"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, InvalidArgumentError):
            raise
        raise InvalidArgumentError(f"{source}: not a readable .npz shard ({exc})") from exc
    if ids.ndim != 1 or images.ndim not in (3, 4) or images.shape[0] != ids.shape[0]:
        raise InvalidArgumentError(
            f"{source}: need ids [n] and images [n, H, W] or [n, C, H, W], got "
            f"{ids.shape} and {images.shape}"
        )
    if ids.size == 0:
        raise InvalidArgumentError(f"{source}: the shard is empty")
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise InvalidArgumentError(f"{source}: images must be uint8 or float, got {images.dtype}")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise InvalidArgumentError(f"{source}: images contain NaN or inf")
    return PoolShard(ids.astype(str), images, names)


def check_shard_ids(shard: PoolShard, registered: np.ndarray, source: str) -> None:
    """A shard must still hold the samples it held when its pool was registered."""
    if not np.array_equal(shard.ids, registered):
        raise InvalidArgumentError(
            f"{source}: its sample ids differ from when the pool was registered; register "
            "the changed data as a new pool"
        )


class PoolCatalog:
    """Registered pools: manifests and id tables in the service's store, cached in memory."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._ids: dict[str, np.ndarray] = {}
        self._lookup: dict[str, dict[str, int]] = {}

    def register(self, pool_id: str, uri: str) -> PoolManifest:
        """Read every shard under ``uri`` and record the pool. The same registration again
        returns the existing manifest; another uri under a taken id is ALREADY_EXISTS."""
        check_pool_id(pool_id)
        if self.exists(pool_id):
            existing = self.manifest(pool_id)
            if existing.uri != uri:
                raise AlreadyExistsError(
                    f"pool {pool_id!r} is registered with {existing.uri!r}; register {uri!r} "
                    "under another id"
                )
            return existing
        try:
            source = open_store(uri)
        except ValueError as exc:
            raise InvalidArgumentError(f"pool uri {uri!r}: {exc}") from exc
        keys = sorted(k for k in source.list("") if k.endswith(SHARD_SUFFIX))
        if not keys:
            raise NotFoundError(f"no {SHARD_SUFFIX} shards under {source.description}")
        shards: list[ShardInfo] = []
        ids: list[np.ndarray] = []
        names, shape = None, None
        for key in keys:
            shard = read_shard(source.get(key), f"{uri}/{key}")
            if names is None:
                names, shape = shard.label_names, shard.images.shape[1:]
            if shard.label_names != names or shard.images.shape[1:] != shape:
                raise InvalidArgumentError(
                    f"{uri}/{key}: label names or image shape differ from the first shard's"
                )
            shards.append(ShardInfo(key, sum(s.count for s in shards), len(shard.ids)))
            ids.append(shard.ids)
        all_ids = np.concatenate(ids)
        if np.unique(all_ids).size != all_ids.size:
            raise InvalidArgumentError(f"{uri}: sample ids repeat across or within shards")
        assert names is not None
        assert shape is not None
        manifest = PoolManifest(pool_id, uri, tuple(shards), names, tuple(int(s) for s in shape))
        self.store.put(self._key(pool_id, "ids.npy"), npy_bytes(all_ids))
        self.store.put(self._key(pool_id, "manifest.json"), manifest.to_json())
        self._ids[pool_id] = all_ids
        return manifest

    def exists(self, pool_id: str) -> bool:
        return self.store.exists(self._key(check_pool_id(pool_id), "manifest.json"))

    def manifest(self, pool_id: str) -> PoolManifest:
        try:
            data = self.store.get(self._key(check_pool_id(pool_id), "manifest.json"))
            return PoolManifest.from_json(data)
        except ObjectNotFoundError as exc:
            raise NotFoundError(f"no pool {pool_id!r}; register it first") from exc

    def ids(self, pool_id: str) -> np.ndarray:
        """All sample ids in index order."""
        if pool_id not in self._ids:
            self.manifest(pool_id)  # NOT_FOUND for an unknown pool
            self._ids[pool_id] = load_npy(self.store.get(self._key(pool_id, "ids.npy")))
        return self._ids[pool_id]

    def indices_of(self, pool_id: str, sample_ids: Sequence[str]) -> np.ndarray:
        """Pool indices of ``sample_ids``; NOT_FOUND names the first few unknown ones."""
        if pool_id not in self._lookup:
            self._lookup[pool_id] = {str(s): i for i, s in enumerate(self.ids(pool_id))}
        lookup = self._lookup[pool_id]
        found = np.array([lookup.get(s, -1) for s in sample_ids], dtype=np.int64)
        unknown = [s for s, i in zip(sample_ids, found, strict=True) if i < 0]
        if unknown:
            raise NotFoundError(
                f"{len(unknown)} sample id(s) are not in pool {pool_id!r}, e.g. {unknown[:3]}"
            )
        return found

    @staticmethod
    def _key(pool_id: str, name: str) -> str:
        return join_key("pools", pool_id, name)


def pool_images(manifest: PoolManifest, ids: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The stored images at pool ``indices``, in that order, reading only the shards that hold
    them; ``ids`` (all of the pool's, as registered) guard against shards changed since."""
    if len(indices) and not 0 <= int(np.min(indices)) <= int(np.max(indices)) < len(ids):
        raise InvalidArgumentError(f"pool indices must lie in 0..{len(ids) - 1}")
    source = open_store(manifest.uri)
    starts = np.array([s.start for s in manifest.shards])
    owner = np.searchsorted(starts, indices, side="right") - 1
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for number in np.unique(owner):
        shard_info = manifest.shards[int(number)]
        uri = manifest.shard_uri(shard_info)
        shard = read_shard(source.get(shard_info.key), uri)
        check_shard_ids(shard, ids[shard_info.start : shard_info.start + shard_info.count], uri)
        rows = np.flatnonzero(owner == number)
        parts.append((rows, shard.images[indices[rows] - shard_info.start]))
    if not parts:
        return np.empty((0, *manifest.image_shape), dtype=np.uint8)
    images = np.empty((len(indices), *parts[0][1].shape[1:]), dtype=parts[0][1].dtype)
    for rows, chosen in parts:
        images[rows] = chosen
    return images
