"""The ``gestalt-al`` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(sys.executable).with_name("gestalt-al")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_demo_saves_artifacts_that_explain_and_rank_reuse(tmp_path: Path) -> None:
    out, saved = tmp_path / "reports" / "selection.json", tmp_path / "round"
    quick = ["--arch", "resnet18", "--images-key", "images", "--epochs", "1"]
    small = ["--initial-labeled", "40", "--pool-limit", "30", "--saliency", "grad_cam"]
    result = _run(
        "local-demo", *quick, *small, "--budget", "4", "--out", str(out), "--save-dir", str(saved)
    )
    assert result.returncode == 0, result.stderr
    assert "latents from grad_cam maps, [N, K, D] = [30, 14, 64]" in result.stdout
    for variant in ("node", "edge", "weighted_node"):
        assert f"GESTALT-{variant}: top 4 of 30" in result.stdout
    report = json.loads(out.read_text())
    assert report["saliency"] == "grad_cam"
    assert 0.0 <= report["validation_macro_auc"] <= 1.0
    node = report["selections"]["node"]
    assert len(node) == 4
    assert all(row["id"].endswith(".png") for row in node)
    assert [row["score"] for row in node] == sorted((row["score"] for row in node), reverse=True)
    assert {p.name for p in saved.iterdir()} == {
        "model.pt", "autoencoder.pt", "latents.npz", "explain.png"
    }  # fmt: skip

    # The saved latents rank the same way again, outside the demo.
    ranked = _run("rank", str(saved / "latents.npz"), "--variant", "node", "--budget", "4")
    assert ranked.returncode == 0, ranked.stderr
    assert [line.split()[1] for line in ranked.stdout.splitlines()] == [row["id"] for row in node]

    picture = tmp_path / "explain.png"
    ids = [row["id"] for row in node[:2]]
    model_files = [
        "--model",
        str(saved / "model.pt"),
        "--autoencoder",
        str(saved / "autoencoder.pt"),
    ]
    explained = _run(
        "explain", *model_files, "--images-key", "images", "--ids", *ids, "--out", str(picture)
    )
    assert explained.returncode == 0, explained.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unknown = _run("explain", *model_files, "--images-key", "images", "--ids", "nope.png")
    assert unknown.returncode == 2
    assert "unknown sample id(s)" in unknown.stderr
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    broken = _run("explain", "--model", str(tmp_path / "broken.pt"), "--autoencoder",
                  str(saved / "autoencoder.pt"), "--ids", ids[0])  # fmt: skip
    assert broken.returncode == 2
    assert "not a gestalt-al model file" in broken.stderr


def test_demo_reports_bad_budget_clearly() -> None:
    result = _run("local-demo", "--budget", "100000")
    assert result.returncode == 2
    assert "budget 100000 is larger than the pool (597 samples)" in result.stderr


def test_rank_command_on_saved_latents(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "latents.npz"
    np.savez(
        path, latents=rng.normal(size=(20, 4, 8)), ids=np.array([f"img{i}" for i in range(20)])
    )
    result = _run("rank", str(path), "--variant", "edge", "--budget", "3")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 3
    bad = tmp_path / "bad.npz"
    np.savez(bad, latents=np.full((3, 4, 8), np.nan), ids=np.array(["a", "b", "c"]))
    result = _run("rank", str(bad))
    assert result.returncode == 2
    assert "NaN or inf" in result.stderr


def test_core_import_starts_no_ray() -> None:
    code = (
        "import sys, gestalt_al, gestalt_al.ranking, gestalt_al.data;"
        "import gestalt_al.latents, gestalt_al.pipeline, gestalt_al.cli;"
        "bad = [m for m in ('ray', 'monai') if m in sys.modules]; print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    assert result.stdout.strip() == "[]"
