"""MedMNIST-style ``.npz`` archives: ``{split}_images`` / ``{split}_labels`` per split."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from gestalt_al.data.imageset import DataLoadError, ImageSet, normalise_labels

SPLITS = ("train", "val", "test")
# Per-sample id arrays some archives carry (the bundled NIH sample: original file names).
_ID_KEYS = ("ids", "filenames")


def load_npz(path: str | Path, split: str = "train", images_key: str = "images") -> ImageSet:
    """One split. Ids are the archive's file names if it has them, else ``split/i``."""
    source = str(path)
    archive = open_npz(path)
    try:
        keys = set(archive.files)
        image_key, label_key = f"{split}_{images_key}", f"{split}_labels"
        for key in (image_key, label_key):
            if key not in keys:
                raise DataLoadError(
                    f"{source}: no array '{key}' for split '{split}'; the archive has "
                    f"{sorted(keys)}"
                )
        images = read_array(archive, image_key, source)
        raw_labels = read_array(archive, label_key, source)
        names = (
            tuple(str(x) for x in read_array(archive, "label_names", source))
            if "label_names" in keys
            else None
        )
        id_key = next((f"{split}_{k}" for k in _ID_KEYS if f"{split}_{k}" in keys), None)
        ids = (
            read_array(archive, id_key, source).astype(str)
            if id_key
            else np.array([f"{split}/{i}" for i in range(images.shape[0])])
        )
    finally:
        archive.close()
    if images.ndim != 3:
        raise DataLoadError(f"{source}: '{image_key}' must be [N, H, W], got shape {images.shape}")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise DataLoadError(f"{source}: '{image_key}' contains NaN or inf pixels")
    for key, arr in ((label_key, raw_labels), (id_key or "", ids)):
        if key and arr.shape[0] != images.shape[0]:
            raise DataLoadError(
                f"{source}: '{image_key}' has {images.shape[0]} images but '{key}' has "
                f"{arr.shape[0]} rows"
            )
    labels, label_names, multi_label = normalise_labels(raw_labels, f"{source}:{label_key}", names)
    return ImageSet(ids, images, labels, label_names, multi_label, f"{source}:{split}")


def open_npz(path: str | Path) -> np.lib.npyio.NpzFile:
    if not Path(path).is_file():
        raise DataLoadError(f"{path}: no such file")
    try:
        archive: np.lib.npyio.NpzFile = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataLoadError(f"{path}: not a readable .npz archive ({exc})") from exc
    return archive


def read_array(archive: np.lib.npyio.NpzFile, key: str, source: str) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as exc:  # object arrays need pickle, which untrusted data never gets
        raise DataLoadError(
            f"{source}: array '{key}' cannot be read without pickle ({exc})"
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataLoadError(f"{source}: array '{key}' is corrupt ({exc})") from exc
