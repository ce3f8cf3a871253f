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


def test_demo_prints_top_queries_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "selection.json"
    result = _run("demo", "--budget", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "NOT saliency maps" in result.stdout
    for variant in ("node", "edge", "weighted_node"):
        assert f"GESTALT-{variant}: top 4 of 597" in result.stdout
    report = json.loads(out.read_text())
    node = report["selections"]["node"]
    assert len(node) == 4
    assert all(row["id"].endswith(".png") for row in node)
    assert [row["score"] for row in node] == sorted((row["score"] for row in node), reverse=True)


def test_demo_reports_bad_budget_clearly() -> None:
    result = _run("demo", "--budget", "100000")
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
        "import sys, gestalt_al, gestalt_al.ranking, gestalt_al.data, gestalt_al.latents,"
        " gestalt_al.cli;"
        "bad = [m for m in ('ray', 'monai', 'torch') if m in sys.modules]; print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    assert result.stdout.strip() == "[]"
