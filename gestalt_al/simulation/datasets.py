"""The benchmark's data sets, read from ``../shared/data`` (or any folder holding the files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gestalt_al.data import ImageSet, bundled_nih_path, load_npz


@dataclass(frozen=True)
class DatasetSpec:
    file: str
    images_key: str
    image_size: int  # model input size; LGG's 64 px slices are halved to keep CPUs busy less
    aux_key: str | None = None  # second modality, for M-VAAL


DATASETS: dict[str, DatasetSpec] = {
    "nih": DatasetSpec("nih_chestxray14.npz", "images", 28),
    "pneumonia": DatasetSpec("pneumoniamnist.npz", "images", 28),
    "breast": DatasetSpec("breastmnist.npz", "images", 28),
    # Tumour present in the slice (FLAIR), with T1 post-contrast as M-VAAL's auxiliary modality.
    "lgg": DatasetSpec("lgg_mri_flair_mask_64.npz", "images", 32, aux_key="t1post"),
}


@dataclass(frozen=True)
class SimulationData:
    """``train`` is the pool the oracle answers from (capped); ``val`` chooses settings and
    stops training early; ``test`` is only for the reported numbers."""

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    image_size: int
    train_aux: ImageSet | None = None


def load_simulation_data(
    name: str, data_dir: str | Path, pool_size: int | None = None, val_size: int | None = None
) -> SimulationData:
    """The named set; ``pool_size`` / ``val_size`` keep a fixed random subset (seed 0, the
    same for every strategy and seed) so small machines can run it."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[name]
    path = Path(data_dir) / spec.file
    if name == "nih" and not path.exists():
        path = bundled_nih_path()
    if not path.exists():
        raise FileNotFoundError(f"{path}: data set {name!r} not found; pass --data-dir")
    train = load_npz(path, "train", spec.images_key)
    aux = load_npz(path, "train", spec.aux_key) if spec.aux_key else None
    keep_train = _subset(len(train), pool_size)
    val = load_npz(path, "val", spec.images_key)
    return SimulationData(
        name,
        train.subset(keep_train),
        val.subset(_subset(len(val), val_size)),
        load_npz(path, "test", spec.images_key),
        spec.image_size,
        aux.subset(keep_train) if aux is not None else None,
    )


def _subset(total: int, size: int | None) -> np.ndarray:
    if size is None or size >= total:
        return np.arange(total)
    if size < 1:
        raise ValueError(f"subset size must be >= 1, got {size}")
    return np.sort(np.random.default_rng(0).choice(total, size, replace=False))
