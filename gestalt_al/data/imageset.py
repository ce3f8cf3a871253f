"""The one in-memory form every loader returns: images, stable ids and (optional) labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataLoadError(ValueError):
    """A data source could not be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ImageSet:
    """A set of 2-D images with a stable string id each.

    ``labels`` is ``[N, K]`` multi-hot (0/1) when ``multi_label``, else ``[N]`` class indices
    in ``0..K-1``; ``None`` for an unlabeled pool. ``label_names`` has the K class names.
    ``images`` is ``[N, H, W]`` in the stored dtype (uint8 for PNG/MedMNIST).
    """

    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray | None
    label_names: tuple[str, ...]
    multi_label: bool
    source: str

    def __post_init__(self) -> None:
        n = self.ids.shape[0]
        if self.ids.ndim != 1:
            raise DataLoadError(f"{self.source}: ids must be 1-D, got shape {self.ids.shape}")
        if self.images.ndim != 3 or self.images.shape[0] != n:
            raise DataLoadError(
                f"{self.source}: images must be [N, H, W] with N={n} (one per id), "
                f"got shape {self.images.shape}"
            )
        unique, counts = np.unique(self.ids, return_counts=True)
        if unique.size != n:
            dup = unique[counts > 1][:5].tolist()
            raise DataLoadError(f"{self.source}: sample ids are not unique, e.g. {dup}")
        if self.labels is not None:
            _check_labels(self.labels, n, len(self.label_names), self.multi_label, self.source)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The samples at ``indices``, ids and labels kept with their images."""
        return ImageSet(
            ids=self.ids[indices],
            images=self.images[indices],
            labels=None if self.labels is None else self.labels[indices],
            label_names=self.label_names,
            multi_label=self.multi_label,
            source=self.source,
        )

    def findings(self, index: int) -> list[str]:
        """Names of the classes labeled for one sample (empty if none or unlabeled)."""
        if self.labels is None:
            return []
        if self.multi_label:
            return [self.label_names[k] for k in np.flatnonzero(self.labels[index])]
        return [self.label_names[int(self.labels[index])]]


def _check_labels(labels: np.ndarray, n: int, k: int, multi_label: bool, source: str) -> None:
    expected = (n, k) if multi_label else (n,)
    if labels.shape != expected:
        raise DataLoadError(f"{source}: labels must be shaped {expected}, got {labels.shape}")
    if multi_label and not np.isin(labels, (0, 1)).all():
        raise DataLoadError(
            f"{source}: multi-label labels must be 0/1, found {np.unique(labels)[:10]}"
        )
    if not multi_label and labels.size and (labels.min() < 0 or labels.max() >= k):
        raise DataLoadError(f"{source}: class indices must lie in 0..{k - 1}")


def normalise_labels(
    raw: np.ndarray, source: str, label_names: tuple[str, ...] | None = None
) -> tuple[np.ndarray, tuple[str, ...], bool]:
    """MedMNIST-style labels -> (labels, names, multi_label).

    ``[N, K>1]`` is multi-hot; ``[N]`` or ``[N, 1]`` holds class indices (binary sets included).
    """
    arr = np.asarray(raw)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
            raise DataLoadError(f"{source}: labels must be finite integers, got dtype {arr.dtype}")
        if not np.array_equal(arr, np.round(arr)):
            raise DataLoadError(f"{source}: labels must be whole numbers (0/1 or class indices)")
    if arr.ndim == 2 and arr.shape[1] > 1:
        names = label_names or tuple(f"class_{k}" for k in range(arr.shape[1]))
        return arr.astype(np.uint8), names, True
    if arr.ndim == 2:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataLoadError(f"{source}: labels must be [N], [N, 1] or [N, K], got {arr.shape}")
    classes = arr.astype(np.int64)
    if classes.size and classes.min() < 0:
        raise DataLoadError(f"{source}: class indices must be >= 0, found {int(classes.min())}")
    count = max(int(classes.max()) + 1 if classes.size else 0, 2, len(label_names or ()))
    names = label_names or tuple(f"class_{k}" for k in range(count))
    return classes, names, False
