"""A folder of PNG/JPEG/DICOM images, optionally with a CSV of labels.

The CSV has an ``id`` column (the image's path relative to the folder) and either one
``label`` column of class indices (multi-class) or one 0/1 column per class (multi-label).
Without a CSV the folder is an unlabeled pool. Every image must decode and every CSV row must
name an existing image, and the other way round: nothing is skipped quietly.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from gestalt_al.data.imageset import DataLoadError, ImageSet, normalise_labels

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")


def load_image_folder(
    root: str | Path, labels_csv: str | Path | None = None, size: int | None = None
) -> ImageSet:
    """All images under ``root`` (recursively), sorted by id; resized to ``size`` if given."""
    folder = Path(root)
    if not folder.is_dir():
        raise DataLoadError(f"{folder}: not a directory")
    files = {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES + DICOM_SUFFIXES
    }
    if not files:
        raise DataLoadError(f"{folder}: no {RASTER_SUFFIXES + DICOM_SUFFIXES} images found")
    labels = names = None
    multi_label = False
    ids = sorted(files)
    if labels_csv is not None:
        ids, raw_labels, header = _read_label_csv(Path(labels_csv), files)
        labels, names, multi_label = normalise_labels(
            raw_labels, str(labels_csv), None if header == ("label",) else header
        )
    images = [_decode(files[i], size) for i in ids]
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(i for i, img in zip(ids, images, strict=True) if img.shape != first)
        raise DataLoadError(
            f"{files[odd]}: image is {images[ids.index(odd)].shape} but {files[ids[0]]} is "
            f"{first}; pass size= to resize all images to one size"
        )
    return ImageSet(
        ids=np.array(ids),
        images=np.stack(images),
        labels=labels,
        label_names=names or (),
        multi_label=multi_label,
        source=str(folder),
    )


def _read_label_csv(
    path: Path, files: dict[str, Path]
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    if not path.is_file():
        raise DataLoadError(f"{path}: no such label file")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][:1] != ["id"] or len(rows[0]) < 2:
        raise DataLoadError(
            f"{path}: the header must be 'id,label' or 'id,<class 1>,<class 2>,...'"
        )
    header = tuple(rows[0][1:])
    ids: list[str] = []
    values: list[list[int]] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise DataLoadError(f"{path}:{line}: expected {len(rows[0])} fields, got {len(row)}")
        if row[0] not in files:
            raise DataLoadError(f"{path}:{line}: image '{row[0]}' is not in the folder")
        try:
            values.append([int(v) for v in row[1:]])
        except ValueError as exc:
            raise DataLoadError(f"{path}:{line}: labels must be integers ({exc})") from exc
        ids.append(row[0])
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        dup = repeated[:5]
        raise DataLoadError(f"{path}: images labeled more than once: {dup}")
    unlabeled = sorted(set(files) - set(ids))
    if unlabeled:
        raise DataLoadError(
            f"{path}: {len(unlabeled)} image(s) in the folder have no label row, e.g. "
            f"{unlabeled[:5]}; label them or move them out"
        )
    return ids, np.array(values, dtype=np.int64), header


def _decode(path: Path, size: int | None) -> np.ndarray:
    decode: Callable[[Path], np.ndarray] = (
        _decode_dicom if path.suffix.lower() in DICOM_SUFFIXES else _decode_raster
    )
    image = decode(path)
    if size is not None and image.shape != (size, size):
        mode = "L" if image.dtype == np.uint8 else "F"
        pil = Image.fromarray(image if mode == "L" else image.astype(np.float32), mode=mode)
        image = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    return image


def _decode_raster(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataLoadError(f"{path}: cannot decode image ({exc})") from exc


def _decode_dicom(path: Path) -> np.ndarray:
    # MONAI is imported here, not at module import: it costs ~10 s and most sets are PNG/npz.
    from monai.data.image_reader import PydicomReader

    try:
        reader = PydicomReader(swap_ij=False)
        pixels, _ = reader.get_data(reader.read(str(path)))
    except Exception as exc:  # pydicom/MONAI raise many types for damaged files
        raise DataLoadError(f"{path}: cannot decode DICOM ({type(exc).__name__}: {exc})") from exc
    image = np.asarray(pixels)
    if image.ndim != 2:
        raise DataLoadError(f"{path}: expected a single-frame 2-D DICOM, got shape {image.shape}")
    return image.astype(np.float32)
