"""Expert labels per pool, append-only in the object store.

Each accepted submission is one immutable object (who, when, which round, which labels), so
the store itself is the record of what was labeled; the current labels are their union. A
sample keeps its first labels: the same labels again are counted as unchanged, different ones
are refused, and a refused request writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from gestalt_al.service.errors import AlreadyExistsError, InvalidArgumentError
from gestalt_al.service.pool import PoolCatalog
from gestalt_al.storage import StoreUnavailableError, join_key

Labels = tuple[float, ...]


class LabelBook:
    """Labels of every pool; one writer process (the gRPC ingress) serialises submissions."""

    def __init__(self, catalog: PoolCatalog) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self._labels: dict[str, dict[int, Labels]] = {}
        self._seen: dict[str, set[str]] = {}  # submission keys already merged
        self._lock = threading.Lock()

    def labels(self, pool_id: str) -> dict[int, Labels]:
        """Pool index -> labels, read from the store on first use."""
        if pool_id not in self._labels:
            merged: dict[int, Labels] = {}
            seen: set[str] = set()
            self._merge_new(pool_id, merged, seen)
            self._labels[pool_id], self._seen[pool_id] = merged, seen
        return self._labels[pool_id]

    def refresh(self, pool_id: str) -> dict[int, Labels]:
        """Also read the submissions stored since this book last looked: how a process other
        than the writer (the loop coordinator) follows the labels."""
        current = self.labels(pool_id)
        self._merge_new(pool_id, current, self._seen[pool_id])
        return current

    def _merge_new(self, pool_id: str, merged: dict[int, Labels], seen: set[str]) -> None:
        for key in sorted(set(self.store.list(self._prefix(pool_id))) - seen):
            record = json.loads(self.store.get(key))
            merged.update({int(i): tuple(v) for i, v in record["labels"].items()})
            seen.add(key)

    def labeled_indices(self, pool_id: str) -> np.ndarray:
        return np.array(sorted(self.labels(pool_id)), dtype=np.int64)

    def submit(
        self,
        pool_id: str,
        submitted: Sequence[tuple[str, Sequence[float]]],
        round_id: str = "",
        submitter: str = "",
    ) -> tuple[int, int]:
        """Store new labels; returns (accepted, unchanged)."""
        if not submitted:
            raise InvalidArgumentError("no labels in the request")
        manifest = self.catalog.manifest(pool_id)
        indices = self.catalog.indices_of(pool_id, [sample for sample, _ in submitted])
        new: dict[int, Labels] = {}
        for (sample, values), index in zip(submitted, indices, strict=True):
            labels = _checked_labels(sample, values, manifest.num_classes)
            if new.get(int(index), labels) != labels:
                raise InvalidArgumentError(f"sample {sample!r} appears twice with different labels")
            new[int(index)] = labels
        with self._lock:
            current = self.labels(pool_id)
            _refuse_conflicts(new, current, self.catalog.ids(pool_id))
            fresh = {i: v for i, v in new.items() if i not in current}
            if fresh:
                try:
                    key = self._write(pool_id, fresh, round_id, submitter)
                except StoreUnavailableError:
                    # The write may have landed with only its answer lost: read the store
                    # again next time, so that a retry finds these labels (unchanged), not
                    # stores them a second time.
                    del self._labels[pool_id], self._seen[pool_id]
                    raise
                current.update(fresh)
                self._seen[pool_id].add(key)
        return len(fresh), len(new) - len(fresh)

    def _write(
        self, pool_id: str, fresh: Mapping[int, Labels], round_id: str, submitter: str
    ) -> str:
        record = {
            "round_id": round_id,
            "submitter": submitter,
            "time": time.time(),
            "labels": {str(i): list(v) for i, v in sorted(fresh.items())},
        }
        data = json.dumps(record).encode()
        name = f"{time.time_ns():020d}-{hashlib.sha256(data).hexdigest()[:12]}.json"
        key = join_key(self._prefix(pool_id), name)
        self.store.put(key, data)
        return key

    @staticmethod
    def _prefix(pool_id: str) -> str:
        return join_key("pools", pool_id, "labels")


def _checked_labels(sample: str, values: Sequence[float], num_classes: int) -> Labels:
    labels = tuple(float(v) for v in values)
    if len(labels) != num_classes:
        raise InvalidArgumentError(
            f"sample {sample!r}: expected {num_classes} labels (one 0/1 per class), "
            f"got {len(labels)}"
        )
    if any(v not in (0.0, 1.0) for v in labels):
        raise InvalidArgumentError(f"sample {sample!r}: labels must be 0 or 1, got {labels}")
    return labels


def _refuse_conflicts(
    new: Mapping[int, Labels], current: Mapping[int, Labels], ids: np.ndarray
) -> None:
    conflicts = [int(i) for i, v in new.items() if current.get(i, v) != v]
    if conflicts:
        shown = [str(ids[i]) for i in conflicts[:3]]
        raise AlreadyExistsError(
            f"{len(conflicts)} sample(s) already have different labels, e.g. {shown}; "
            "labels are never overwritten, nothing from this request was stored"
        )
