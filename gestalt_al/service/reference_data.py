"""The labeled data a loop measures itself against, and the simulation's oracle.

The pool carries no labels; its labels arrive in the LabelBook as K values in {0, 1}
(multi-hot). The validation split (early stopping), the optional test split and, in
simulation, the oracle's ground truth come from one ``.npz`` archive. Everything is checked
against the pool when a loop starts, so a mismatch fails StartLoop, not round 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gestalt_al.data import DataLoadError, ImageSet, load_npz
from gestalt_al.service.errors import InvalidArgumentError
from gestalt_al.service.labels import Labels
from gestalt_al.service.loop_config import LoopConfig
from gestalt_al.service.pool import PoolManifest


@dataclass(frozen=True)
class ReferenceData:
    validation: ImageSet
    test: ImageSet | None
    truth: ImageSet | None  # the oracle's ground truth (label_source "oracle")

    @property
    def multi_label(self) -> bool:
        return self.validation.multi_label


def load_reference(
    config: LoopConfig, manifest: PoolManifest, pool_ids: np.ndarray
) -> ReferenceData:
    """The loop's reference splits, checked against the pool (classes, image shape, and that
    the oracle knows every pool sample)."""
    validation = _split(config, config.validation_split, manifest)
    test = _split(config, config.test_split, manifest) if config.test_split else None
    truth = None
    if config.label_source == "oracle":
        truth = _split(config, config.oracle_split, manifest)
        missing = np.setdiff1d(pool_ids, truth.ids)
        if missing.size:
            raise InvalidArgumentError(
                f"the oracle ({truth.source}) has no labels for {missing.size} pool sample(s), "
                f"e.g. {missing[:3].tolist()}; pick the oracle_split that holds the pool"
            )
    return ReferenceData(validation, test, truth)


def _split(config: LoopConfig, split: str, manifest: PoolManifest) -> ImageSet:
    try:
        data = load_npz(config.data, split, config.images_key)
    except DataLoadError as exc:
        raise InvalidArgumentError(f"data: {exc}") from exc
    if data.labels is None:
        raise InvalidArgumentError(f"{data.source}: the split has no labels")
    if data.label_names != manifest.label_names:
        raise InvalidArgumentError(
            f"{data.source}: its classes {list(data.label_names)} differ from pool "
            f"{manifest.pool_id!r}'s {list(manifest.label_names)}"
        )
    if data.images.shape[1:] != manifest.image_shape:
        raise InvalidArgumentError(
            f"{data.source}: images are {data.images.shape[1:]}, the pool's are "
            f"{manifest.image_shape}; pick the images_key that matches the pool"
        )
    return data


def multi_hot(data: ImageSet, rows: np.ndarray) -> list[list[float]]:
    """Ground-truth rows as the LabelBook stores labels (a class index becomes one-hot)."""
    assert data.labels is not None  # checked by load_reference
    if data.multi_label:
        return [[float(v) for v in data.labels[i]] for i in rows]
    return [[float(k == data.labels[i]) for k in range(data.num_classes)] for i in rows]


def training_labels(
    stored: Mapping[int, Labels], indices: np.ndarray, multi_label: bool
) -> np.ndarray:
    """LabelBook labels of ``indices`` as a task model trains on them: ``[M, K]`` multi-hot,
    or ``[M]`` class indices (each sample must then have exactly one class)."""
    rows = np.array([stored[int(i)] for i in indices], dtype=np.float32)
    if multi_label:
        return rows
    single = rows.sum(axis=1) == 1
    if not single.all():
        raise InvalidArgumentError(
            f"{int((~single).sum())} labeled sample(s) have not exactly one class, which a "
            "single-label task needs"
        )
    classes: np.ndarray = rows.argmax(axis=1).astype(np.int64)
    return classes


class Oracle:
    """Answers a query with the data set's ground truth (simulation)."""

    def __init__(self, truth: ImageSet) -> None:
        self.truth = truth
        self.row = {str(sample): i for i, sample in enumerate(truth.ids)}

    def answer(self, sample_ids: Sequence[str]) -> list[tuple[str, list[float]]]:
        rows = np.array([self.row[s] for s in sample_ids], dtype=np.int64)
        return list(zip(sample_ids, multi_hot(self.truth, rows), strict=True))
