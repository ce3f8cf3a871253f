"""Pools registered by reference: ``.npz`` shards under a folder or S3 prefix.

A shard holds ``ids`` ``[n]`` (unique non-empty strings), ``images`` ``[n, H, W]`` or
``[n, C, H, W]`` with C 1 or 3 (uint8, or floats in [0, 1]) and ``label_names`` ``[K]`` (unique
strings). Registration reads every shard once and records a manifest; a sample's *index* (its
position over the shards in key order) is its stable integer id, used in FAISS indexes and
result files. The images never pass through the service's API. Everything read from a pool is
untrusted: a malformed shard is an ``InvalidArgumentError`` naming the file and the problem.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gestalt_al.service.arrays import load_npy, npy_bytes, npz_bytes
from gestalt_al.service.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
)
from gestalt_al.storage import (
    ObjectNotFoundError,
    ObjectStore,
    StoreUnavailableError,
    join_key,
    open_store,
    parse_location,
    validate_key,
)
from gestalt_al.storage.store import LocalStore

# \Z, not $: "$" also matches before a trailing newline, which no object key may hold.
POOL_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
SHARD_SUFFIX = ".npz"
MAX_SHARD_BYTES = 2**31  # a shard file, and the arrays in it once decompressed
MAX_LISTED = 100_000  # entries looked at under a local pool folder before giving up


def check_pool_id(pool_id: str) -> str:
    if not POOL_ID.match(pool_id):
        raise InvalidArgumentError(
            f"pool id {pool_id!r} must be 1 to 63 lowercase letters, digits, _ or -, starting "
            "with a letter or digit"
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
    if len(data) > MAX_SHARD_BYTES:
        raise InvalidArgumentError(f"{source}: larger than {MAX_SHARD_BYTES} bytes; split it")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as listing:
            unpacked = sum(info.file_size for info in listing.infolist())
        if unpacked > MAX_SHARD_BYTES:
            raise InvalidArgumentError(
                f"{source}: its arrays unpack to {unpacked} bytes, more than {MAX_SHARD_BYTES}; "
                "split it into smaller shards"
            )
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise InvalidArgumentError(f"{source}: an .npy array, not an .npz archive of arrays")
        with loaded as archive:
            missing = {"ids", "images", "label_names"} - set(archive.files)
            if missing:
                raise InvalidArgumentError(f"{source}: shard lacks {sorted(missing)}")
            ids, images, names = archive["ids"], archive["images"], archive["label_names"]
    except InvalidArgumentError:
        raise
    except Exception as exc:  # untrusted bytes: zipfile, zlib and numpy's header parser
        # raise many kinds (BadZipFile, zlib.error, tokenize.TokenError, MemoryError, ...)
        raise InvalidArgumentError(
            f"{source}: not a readable .npz shard ({type(exc).__name__}: {exc})"
        ) from exc
    _check_arrays(ids, images, names, source)
    return PoolShard(ids, images, tuple(str(n) for n in names))


def _check_arrays(ids: np.ndarray, images: np.ndarray, names: np.ndarray, source: str) -> None:
    if ids.ndim != 1 or images.ndim not in (3, 4) or images.shape[0] != ids.shape[0]:
        raise InvalidArgumentError(
            f"{source}: need ids [n] and images [n, H, W] or [n, C, H, W], got "
            f"{ids.shape} and {images.shape}"
        )
    if ids.size == 0:
        raise InvalidArgumentError(f"{source}: the shard is empty")
    if ids.dtype.kind != "U" or bool((ids == "").any()):
        raise InvalidArgumentError(
            f"{source}: ids must be non-empty strings, got dtype {ids.dtype}"
        )
    unique, counts = np.unique(ids, return_counts=True)
    if unique.size != ids.size:
        raise InvalidArgumentError(
            f"{source}: sample ids repeat within the shard, e.g. {unique[counts > 1][:3].tolist()}"
        )
    if images.ndim == 4 and images.shape[1] not in (1, 3):
        raise InvalidArgumentError(
            f"{source}: images [n, C, H, W] need C 1 or 3, got {images.shape}"
        )
    if 0 in images.shape[1:]:
        raise InvalidArgumentError(f"{source}: images have an empty axis: {images.shape}")
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise InvalidArgumentError(f"{source}: images must be uint8 or float, got {images.dtype}")
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise InvalidArgumentError(f"{source}: images contain NaN or inf")
        if images.min() < 0 or images.max() > 1:
            raise InvalidArgumentError(
                f"{source}: float images must lie in [0, 1], got [{images.min():.3g}, "
                f"{images.max():.3g}]; store uint8 or rescale"
            )
    if names.ndim != 1 or names.size == 0 or names.dtype.kind != "U":
        raise InvalidArgumentError(
            f"{source}: label_names must be a non-empty [K] array of strings, got shape "
            f"{names.shape} and dtype {names.dtype}"
        )
    if np.unique(names).size != names.size:
        raise InvalidArgumentError(f"{source}: label_names repeat: {names.tolist()}")


def check_shard_ids(shard: PoolShard, registered: np.ndarray, source: str) -> None:
    """A shard must still hold the samples it held when its pool was registered."""
    if not np.array_equal(shard.ids, registered):
        raise InvalidArgumentError(
            f"{source}: its sample ids differ from when the pool was registered; register "
            "the changed data as a new pool"
        )


def _shard_keys(uri: str) -> tuple[ObjectStore, list[str]]:
    """The store at a pool ``uri`` and its shard keys in pool order. A local ``uri`` must be an
    absolute path to an existing folder (nothing is created); a bad ``uri`` or shard file name
    is INVALID_ARGUMENT, a folder, prefix or bucket without shards NOT_FOUND."""
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        raise InvalidArgumentError(f"pool uri {uri!r} holds control characters")
    try:
        location = parse_location(uri)
        source = open_store(uri) if location is not None else None
    except ValueError as exc:
        raise InvalidArgumentError(f"pool uri {uri!r}: {exc}") from exc
    if source is None:
        folder = _local_folder(uri)
        source = open_store(str(folder))
        found = _local_files(folder, uri)
    else:
        try:
            found = source.list("")
        except StoreUnavailableError as exc:
            if getattr(exc.__cause__, "code", None) == "NoSuchBucket":
                raise NotFoundError(f"pool uri {uri!r}: no such bucket") from exc
            raise
    keys = sorted(k for k in found if k.endswith(SHARD_SUFFIX))
    if not keys:
        raise NotFoundError(f"no {SHARD_SUFFIX} shards under {uri}")
    for key in keys:
        try:
            validate_key(key)
        except ValueError as exc:
            raise InvalidArgumentError(
                f"{uri}/{key}: shard paths may use only letters, digits and . _ = + - ({exc})"
            ) from exc
    return source, keys


def _local_folder(uri: str) -> Path:
    folder = Path(uri)
    if not folder.is_absolute():
        raise InvalidArgumentError(
            f"pool uri {uri!r} must be an absolute folder path on the service's nodes or "
            "s3://bucket/prefix"
        )
    if len(uri.encode()) > 4095 or any(len(part.encode()) > 255 for part in folder.parts):
        raise InvalidArgumentError(f"pool uri {uri!r}: path or folder name too long")
    try:
        is_dir, exists = folder.is_dir(), folder.exists()
    except OSError as exc:
        raise InvalidArgumentError(f"pool uri {uri!r}: {exc}") from exc
    if not exists:
        raise NotFoundError(f"no {SHARD_SUFFIX} shards under {uri}: no such folder")
    if not is_dir:
        raise InvalidArgumentError(f"pool uri {uri!r} is a file; give the folder of shards")
    return folder


def _local_files(folder: Path, uri: str) -> list[str]:
    """Regular files under ``folder`` (relative, '/'-separated), looking at no more than
    ``MAX_LISTED`` entries: a pool uri of '/' must not scan a whole disk."""
    found: list[str] = []
    seen = 0
    for parent, dirs, files in os.walk(folder):  # symlinked folders are not followed
        seen += len(dirs) + len(files)
        if seen > MAX_LISTED:
            raise InvalidArgumentError(
                f"pool uri {uri!r}: more than {MAX_LISTED} entries under it; give the folder "
                "that holds the shards"
            )
        dirs.sort()
        for name in files:
            path = os.path.join(parent, name)
            # isfile: False for what cannot be stat'ed (/proc/1/cwd), FIFOs and devices.
            if os.path.isfile(path) and not name.startswith(".staging-"):
                found.append(Path(path).relative_to(folder).as_posix())
    return found


def _read(source: ObjectStore, key: str, uri: str) -> bytes:
    """A shard's bytes; a local file that cannot be read is the request's problem (an object
    store that cannot be reached is not: its errors pass on)."""
    if not isinstance(source, LocalStore):
        return source.get(key)
    try:
        size = (source.root / key).stat().st_size
        if size > MAX_SHARD_BYTES:
            raise InvalidArgumentError(f"{uri}/{key}: {size} bytes, more than {MAX_SHARD_BYTES}")
        return source.get(key)
    except (OSError, ObjectNotFoundError) as exc:  # gone since listed, unreadable
        raise InvalidArgumentError(f"{uri}/{key}: cannot be read ({exc})") from exc


def _check_unique(all_ids: np.ndarray, shards: list[ShardInfo], uri: str) -> None:
    unique, counts = np.unique(all_ids, return_counts=True)
    if unique.size == all_ids.size:
        return
    repeated = unique[counts > 1][0]
    places = np.flatnonzero(all_ids == repeated)
    starts = np.array([s.start for s in shards])
    keys = [shards[int(i)].key for i in np.searchsorted(starts, places, side="right") - 1]
    raise InvalidArgumentError(
        f"{uri}: sample ids repeat across shards ({int((counts > 1).sum())} of them), e.g. "
        f"{str(repeated)!r} in {keys}"
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
        source, keys = _shard_keys(uri)
        shards: list[ShardInfo] = []
        ids: list[np.ndarray] = []
        first: PoolShard | None = None
        for key in keys:
            shard = read_shard(_read(source, key, uri), f"{uri}/{key}")
            if first is None:
                first = shard
            if shard.label_names != first.label_names:
                raise InvalidArgumentError(
                    f"{uri}/{key}: label names {list(shard.label_names)} differ from the first "
                    f"shard's {list(first.label_names)}"
                )
            if shard.images.shape[1:] != first.images.shape[1:]:
                raise InvalidArgumentError(
                    f"{uri}/{key}: images are {shard.images.shape[1:]}, the first shard's are "
                    f"{first.images.shape[1:]}"
                )
            if shard.images.dtype != first.images.dtype:
                raise InvalidArgumentError(
                    f"{uri}/{key}: images are {shard.images.dtype}, the first shard's are "
                    f"{first.images.dtype}"
                )
            shards.append(ShardInfo(key, sum(s.count for s in shards), len(shard.ids)))
            ids.append(shard.ids)
        assert first is not None  # _shard_keys found at least one
        all_ids = np.concatenate(ids)
        _check_unique(all_ids, shards, uri)
        names, shape = first.label_names, first.images.shape[1:]
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
