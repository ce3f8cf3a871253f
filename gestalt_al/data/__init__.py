"""Loading medical image sets into ``ImageSet``: MedMNIST-style .npz, image folders, DICOM."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from gestalt_al.data.folder import load_image_folder
from gestalt_al.data.imageset import DataLoadError, ImageSet
from gestalt_al.data.npz import SPLITS, load_npz
from gestalt_al.data.paired import PairedImageSet, load_paired_npz

__all__ = [
    "SPLITS",
    "DataLoadError",
    "ImageSet",
    "PairedImageSet",
    "bundled_lgg_path",
    "bundled_nih_path",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "load_paired_npz",
]


def bundled_nih_path() -> Path:
    """The NIH ChestX-ray14 sample shipped with the package (provenance: samples/PROVENANCE.md)."""
    return Path(str(files("gestalt_al.data") / "samples" / "nih_chestxray14.npz"))


def bundled_lgg_path() -> Path:
    """17 LGG brain-MRI patients (FLAIR, T1 pre/post-contrast, tumour masks), for M-VAAL."""
    return Path(str(files("gestalt_al.data") / "samples" / "lgg_mri_64.npz"))


def load_dataset(
    path: str | Path,
    split: str = "train",
    images_key: str = "images",
    labels_csv: str | Path | None = None,
    size: int | None = None,
) -> ImageSet:
    """An ``.npz`` archive's split, or a folder of images (with ``labels_csv`` if labeled)."""
    source = Path(path)
    if source.is_dir():
        return load_image_folder(source, labels_csv, size)
    return load_npz(source, split, images_key)
