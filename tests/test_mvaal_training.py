"""M-VAAL / VAAL training on the bundled LGG brain-MRI sample, paired loading, the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gestalt_al.data import DataLoadError, PairedImageSet, bundled_lgg_path, load_paired_npz
from gestalt_al.mvaal import MVAALConfig, vae_adversarial
from gestalt_al.mvaal.train import Modalities, train_mvaal

SMALL = MVAALConfig(image_size=32, latent_dim=16, width=8)
SCRIPT = Path(sys.executable).with_name("gestalt-al")


def _split(count_labeled: int = 40, pool: int = 100) -> tuple[PairedImageSet, PairedImageSet]:
    data = load_paired_npz(bundled_lgg_path(), "train", "t1post", "images")
    order = np.random.default_rng(0).permutation(len(data))
    return data.subset(order[:count_labeled]), data.subset(order[count_labeled:][:pool])


def test_bundled_lgg_pairs_t1_post_contrast_with_flair() -> None:
    data = load_paired_npz(bundled_lgg_path(), "train", "t1post", "images")
    assert data.aux is not None
    assert len(data) == 308
    assert data.main.images.shape == data.aux.images.shape == (308, 64, 64)
    assert data.ids[0] == "TCGA_CS_4941_19960909/001"
    assert not np.array_equal(data.main.images, data.aux.images)  # no FLAIR copies bundled
    assert data.main.labels is not None
    assert set(np.unique(data.main.labels)) == {0, 1}  # tumour present or not
    assert load_paired_npz(bundled_lgg_path(), "val", "t1post", None).aux is None


def test_paired_sets_must_agree_sample_by_sample() -> None:
    data = load_paired_npz(bundled_lgg_path(), "val", "t1post", "images")
    assert data.aux is not None
    shuffled = data.aux.subset(np.arange(len(data))[::-1])
    with pytest.raises(DataLoadError, match="sample ids differ"):
        PairedImageSet(data.main, shuffled)
    with pytest.raises(DataLoadError, match="no array 'val_t2'"):
        load_paired_npz(bundled_lgg_path(), "val", "t1post", "t2")
    with pytest.raises(ValueError, match="needs an auxiliary modality"):
        Modalities.from_paired(dataclasses.replace(data, aux=None), SMALL)


def test_discriminator_learns_to_tell_labeled_from_unlabeled() -> None:
    labeled, pool = _split()
    seen: list[float] = []
    _, history = train_mvaal(
        SMALL, labeled, pool, epochs=4, on_epoch_end=lambda r: seen.append(r.discriminator_auc),
        show_progress=False,
    )  # fmt: skip
    assert [record.epoch for record in history] == [1, 2, 3, 4]
    assert seen == [record.discriminator_auc for record in history]
    assert all(np.isfinite(list(record.as_dict().values())).all() for record in history)
    assert history[-1].main_reconstruction < history[0].main_reconstruction
    assert history[-1].aux_reconstruction > 0  # the auxiliary decoder is trained
    assert history[-1].discriminator_auc > 0.75  # chance is 0.5
    _, again = train_mvaal(SMALL, labeled, pool, epochs=1, show_progress=False)
    assert again[0].as_dict() | {"seconds": 0} == history[0].as_dict() | {"seconds": 0}


def test_vaal_trains_without_an_auxiliary_decoder() -> None:
    labeled, pool = _split(20, 40)
    vaal = dataclasses.replace(SMALL, aux_channels=0)
    labeled = dataclasses.replace(labeled, aux=None)
    pool = dataclasses.replace(pool, aux=None)
    models, history = train_mvaal(vaal, labeled, pool, epochs=1, show_progress=False)
    assert models.vae.aux_decoder is None
    assert history[0].aux_reconstruction == 0.0
    with pytest.raises(ValueError, match="at least 2 labeled"):
        train_mvaal(vaal, labeled.subset(np.arange(1)), pool, epochs=1)


@pytest.mark.parametrize(("labeled", "unlabeled"), [(17, 33), (2, 17), (33, 2)])
def test_batches_of_one_sample_never_reach_batch_norm(labeled: int, unlabeled: int) -> None:
    """Pools of 16k + 1 once stopped a simulated round (batch 16, batch norm in train mode)."""
    small_labeled, small_pool = _split(labeled, unlabeled)
    _, history = train_mvaal(SMALL, small_labeled, small_pool, epochs=1, show_progress=False)
    assert np.isfinite(history[0].vae_loss)


def test_adversarial_objectives_golden() -> None:
    class Identity(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z[:, 0]

    labeled, unlabeled = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0], [6.0]])
    assert float(vae_adversarial(Identity(), labeled, unlabeled, "eq4")) == pytest.approx(0.0)
    assert float(vae_adversarial(Identity(), labeled, unlabeled, "all_labeled")) == -2.0


def test_cli_trains_queries_and_draws_the_histogram(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), "mvaal", "--image-size", "32", "--width", "4", "--epochs", "1", *args],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    result = run("--budget", "5", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "the 5 lowest discriminator scores" in result.stdout
    report = json.loads((tmp_path / "mvaal.json").read_text())
    scores = [row["score"] for row in report["selection"]]
    assert scores == sorted(scores)
    assert len(report["history"]) == 1
    assert (tmp_path / "scores.png").read_bytes()[:4] == b"\x89PNG"
    vaal = run("--aux", "none", "--budget", "3")
    assert vaal.returncode == 0, vaal.stderr
    assert "VAAL: the 3 lowest" in vaal.stdout
    too_many = run("--budget", "1000")
    assert too_many.returncode == 2
    assert "budget 1000 is larger than the pool (268 samples)" in too_many.stderr
