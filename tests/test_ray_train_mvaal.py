"""M-VAAL under Ray Train: two CPU workers averaging gradients, per-epoch metrics on Ray's
Prometheus export, and the query from the trained discriminator."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from gestalt_al.cli import main
from gestalt_al.data import PairedImageSet, bundled_lgg_path, load_paired_npz
from gestalt_al.distributed.epochs import RayRun
from gestalt_al.distributed.mvaal import train_mvaal_ray
from gestalt_al.models import unit_images
from gestalt_al.mvaal import MVAALConfig, discriminator_scores, select_lowest
from tests.conftest import RayCluster

SMALL = MVAALConfig(image_size=32, latent_dim=16, width=8)
pytestmark = pytest.mark.timeout(300)


def _split(count_labeled: int = 40, pool: int = 100) -> tuple[PairedImageSet, PairedImageSet]:
    data = load_paired_npz(bundled_lgg_path(), "train", "t1post", "images")
    order = np.random.default_rng(0).permutation(len(data))
    return data.subset(order[:count_labeled]), data.subset(order[count_labeled:][:pool])


def _scrape(url: str, needle: str, seconds: float = 60) -> list[str]:
    """Lines of Ray's metrics export that mention ``needle`` (exports lag a few seconds)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        lines = [line for line in body.splitlines() if needle in line and not line.startswith("#")]
        if lines:
            return lines
        time.sleep(1)
    return []


def test_mvaal_trains_on_two_workers_reports_metrics_and_queries(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    labeled, pool = _split()
    run = RayRun("mvaal-r0001", str(tmp_path), num_workers=2)
    result = train_mvaal_ray(SMALL, labeled, pool, epochs=8, run=run)
    assert [record["epoch"] for record in result.history] == [float(epoch) for epoch in range(1, 9)]
    assert result.restarts == 0
    first, last = result.history[0], result.history[-1]
    assert all(np.isfinite(list(record.values())).all() for record in result.history)
    assert last["main_reconstruction"] < first["main_reconstruction"]
    assert last["aux_reconstruction"] > 0  # the auxiliary decoder is trained too
    # Labeled vs unlabeled; chance is 0.5. Two workers take half the steps per epoch of one
    # process, so this needs twice the single-process test's epochs.
    assert last["discriminator_auc"] > 0.65

    pool_images = unit_images(pool.main.images, SMALL.image_size, SMALL.main_channels)
    scores = discriminator_scores(result.models.vae, result.models.discriminator, pool_images)
    selection = select_lowest(scores, pool.ids, budget=10)
    np.testing.assert_array_equal(selection.indices, np.argsort(scores, kind="stable")[:10])

    lines = _scrape(ray_cluster.metrics_url, 'run="mvaal-r0001"')
    auc_lines = [line for line in lines if 'metric="discriminator_auc"' in line]
    assert auc_lines
    assert all('job="mvaal"' in line for line in auc_lines)
    assert float(auc_lines[0].rsplit(" ", 1)[1]) == pytest.approx(last["discriminator_auc"])
    assert any(line.startswith("ray_gestalt_train_epochs_total") for line in lines)
    assert any(line.startswith("ray_gestalt_train_epoch_seconds_bucket") for line in lines)


def test_bad_sampler_requests_fail_before_any_worker_starts(tmp_path: Path) -> None:
    labeled, pool = _split(1, 10)
    with pytest.raises(ValueError, match="at least 2 labeled"):
        train_mvaal_ray(SMALL, labeled, pool, epochs=1, run=RayRun("bad", str(tmp_path)))
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train_mvaal_ray(SMALL, *_split(), epochs=0, run=RayRun("bad", str(tmp_path)))


def test_cli_trains_the_sampler_on_ray_workers(
    ray_cluster: RayCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["mvaal", "--workers", "2", "--storage", str(tmp_path), "--round", "1"]
    arguments += ["--epochs", "2", "--image-size", "32", "--width", "8", "--budget", "5"]
    assert main([*arguments, "--out-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Ray Train run mvaal-r0001 (2 workers)" in out
    report = json.loads((tmp_path / "out" / "mvaal.json").read_text())
    assert [record["epoch"] for record in report["history"]] == [1.0, 2.0]
    assert len(report["selection"]) == 5
    assert (tmp_path / "out" / "scores.png").stat().st_size > 10_000
