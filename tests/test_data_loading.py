"""Loaders: MedMNIST .npz, image folders with a label CSV, DICOM via MONAI; clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gestalt_al.data import (
    DataLoadError,
    bundled_nih_path,
    load_dataset,
    load_image_folder,
    load_npz,
)
from tests.conftest import SHARED_DATA
from tests.dicom_files import write_dicom

# The project's shared data folder sits beside the repository (as in CI).


def test_bundled_nih_sample_is_multilabel_with_file_name_ids() -> None:
    train = load_npz(bundled_nih_path(), "train")
    assert len(train) == 697
    assert train.images.shape == (697, 28, 28)
    assert train.multi_label
    assert train.num_classes == 14
    assert train.label_names[0] == "atelectasis"
    assert train.ids[0].endswith(".png")
    assert len(set(train.ids)) == 697
    assert train.labels is not None
    assert int(train.labels.sum(axis=0)[2]) == 92  # effusion positives, SOURCES.md
    big = load_npz(bundled_nih_path(), "test", images_key="images_64")
    assert big.images.shape == (330, 64, 64)


def test_medmnist_single_label_sets_get_split_index_ids() -> None:
    pneumonia = load_npz(SHARED_DATA / "pneumoniamnist.npz", "val")
    assert len(pneumonia) == 524
    assert not pneumonia.multi_label
    assert pneumonia.ids[3] == "val/3"
    assert pneumonia.labels is not None
    assert pneumonia.num_classes == 2
    assert pneumonia.labels.shape == (524,)


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "set.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_npz_errors_name_file_and_problem(tmp_path: Path) -> None:
    imgs, labels = np.zeros((4, 8, 8), np.uint8), np.zeros((4, 1), np.uint8)
    with pytest.raises(DataLoadError, match=r"set.npz: no array 'train_labels'.*train_images"):
        load_npz(_npz(tmp_path, train_images=imgs), "train")
    with pytest.raises(DataLoadError, match="has 4 images but 'train_labels' has 3 rows"):
        load_npz(_npz(tmp_path, train_images=imgs, train_labels=labels[:3]), "train")
    with pytest.raises(DataLoadError, match="NaN or inf pixels"):
        load_npz(
            _npz(tmp_path, train_images=np.full((4, 8, 8), np.nan), train_labels=labels), "train"
        )
    with pytest.raises(DataLoadError, match="multi-label labels must be 0/1"):
        load_npz(_npz(tmp_path, train_images=imgs, train_labels=np.full((4, 3), 2)), "train")
    with pytest.raises(DataLoadError, match="without pickle"):
        load_npz(
            _npz(tmp_path, train_images=imgs, train_labels=np.array([[{}]] * 4, dtype=object)),
            "train",
        )
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataLoadError, match=r"broken\.npz: not a readable \.npz"):
        load_npz(broken)
    with pytest.raises(DataLoadError, match="no such file"):
        load_npz(tmp_path / "missing.npz")


def _png(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def test_folder_with_multilabel_csv(tmp_path: Path) -> None:
    _png(tmp_path / "b.png", 10)
    _png(tmp_path / "sub" / "a.png", 20)
    (tmp_path / "labels.csv").write_text("id,effusion,mass\nsub/a.png,1,0\nb.png,1,1\n")
    data = load_image_folder(tmp_path, tmp_path / "labels.csv")
    assert data.ids.tolist() == ["sub/a.png", "b.png"]
    assert data.multi_label
    assert data.label_names == ("effusion", "mass")
    assert data.images[0, 0, 0] == 20
    assert data.findings(1) == ["effusion", "mass"]


def test_folder_single_label_and_unlabeled(tmp_path: Path) -> None:
    _png(tmp_path / "x.png", 1)
    _png(tmp_path / "y.jpg", 2)
    (tmp_path / "labels.csv").write_text("id,label\nx.png,0\ny.jpg,2\n")
    labeled = load_image_folder(tmp_path, tmp_path / "labels.csv")
    assert not labeled.multi_label
    assert labeled.labels is not None
    assert labeled.labels.tolist() == [0, 2]
    pool = load_dataset(tmp_path)
    assert pool.labels is None
    assert pool.ids.tolist() == ["x.png", "y.jpg"]


def test_folder_errors_lose_nothing_silently(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 1)
    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\na.png,1\n")
    with pytest.raises(DataLoadError, match=r"1 image\(s\) in the folder have no label row.*b.png"):
        load_image_folder(tmp_path, csv)
    csv.write_text("id,label\na.png,1\nb.png,0\nc.png,1\n")
    with pytest.raises(DataLoadError, match=r"labels.csv:4: image 'c.png' is not in the folder"):
        load_image_folder(tmp_path, csv)
    csv.write_text("id,label\na.png,1\na.png,1\nb.png,0\n")
    with pytest.raises(DataLoadError, match="labeled more than once"):
        load_image_folder(tmp_path, csv)
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataLoadError, match=r"c.png: cannot decode image"):
        load_image_folder(tmp_path)


def test_folder_sizes_must_agree_unless_resized(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1, size=8)
    _png(tmp_path / "b.png", 1, size=16)
    with pytest.raises(DataLoadError, match=r"b.png: image is \(16, 16\).*pass size="):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=12).images.shape == (2, 12, 12)


def test_dicom_through_monai_keeps_rows_and_columns(tmp_path: Path) -> None:
    pixels = np.arange(12 * 7, dtype=np.uint16).reshape(12, 7) * 100
    write_dicom(tmp_path / "scan1.dcm", pixels)
    write_dicom(tmp_path / "scan2.dcm", pixels[::-1].copy())
    (tmp_path / "bad.dcm").write_bytes(b"DICM but not really")
    with pytest.raises(DataLoadError, match=r"bad.dcm: cannot decode DICOM"):
        load_image_folder(tmp_path)
    (tmp_path / "bad.dcm").unlink()
    data = load_image_folder(tmp_path)
    assert data.ids.tolist() == ["scan1.dcm", "scan2.dcm"]
    np.testing.assert_array_equal(data.images[0], pixels)
    np.testing.assert_array_equal(data.images[1], pixels[::-1])
