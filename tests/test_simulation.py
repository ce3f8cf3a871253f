"""Simulated AL: curve summaries by hand, the loop's guarantees, and ``gestalt-al simulate``
through a real Ray cluster."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from gestalt_al.cli import main
from gestalt_al.simulation import SimulationSettings, load_simulation_data, simulate
from gestalt_al.simulation.summary import area_under_curve, labels_to_reach, summarise
from gestalt_al.training import TrainConfig
from tests.conftest import SHARED_DATA, RayCluster


def test_area_and_labels_to_reach_by_hand() -> None:
    labels = np.array([10.0, 20.0, 40.0])
    metric = np.array([0.5, 0.7, 0.8])
    # (0.5 + 0.7) / 2 * 10 + (0.7 + 0.8) / 2 * 20 = 6 + 15 = 21, over a range of 30.
    assert area_under_curve(labels, metric) == pytest.approx(0.7)
    assert labels_to_reach(labels, metric, 0.75) == pytest.approx(30.0)
    assert labels_to_reach(labels, metric, 0.4) == 10.0
    assert labels_to_reach(labels, metric, 0.81) == math.inf
    with pytest.raises(ValueError, match="increasing"):
        area_under_curve(np.array([10.0, 10.0]), np.array([0.5, 0.6]))


@given(st.floats(0, 1), st.lists(st.floats(1, 50), min_size=1, max_size=6))
def test_a_flat_curve_has_its_height_as_area(height: float, steps: list[float]) -> None:
    labels = np.cumsum([0.0, *steps]) + 5
    assert area_under_curve(labels, np.full(labels.size, height)) == pytest.approx(height)


def test_summaries_pair_seeds_against_random() -> None:
    labels = np.array([10.0, 20.0, 30.0])
    random = np.array([[0.5, 0.6, 0.7], [0.5, 0.62, 0.72], [0.52, 0.6, 0.69], [0.5, 0.6, 0.71],
                       [0.51, 0.61, 0.7]])  # fmt: skip
    better = random + np.array([0.0, 0.05, 0.02])  # reaches random's final 0.704 earlier
    found = {s.strategy: s for s in summarise(labels, {"random": random, "better": better})}
    gains = np.full(5, (0.05 / 2 + (0.05 + 0.02) / 2) * 10 / 20)
    assert found["better"].area_gain == pytest.approx(gains.mean())
    areas = [area_under_curve(labels, r) for r in random]
    assert found["random"].area_mean == pytest.approx(np.mean(areas))
    mean = better.mean(axis=0)
    reach = 20 + (random[:, -1].mean() - mean[1]) / (mean[2] - mean[1]) * 10
    assert found["better"].label_efficiency == pytest.approx(reach / 30)
    assert found["random"].label_efficiency == pytest.approx(1.0)
    assert math.isnan(found["random"].wilcoxon_p)
    noisy = better + np.array([[0.01], [-0.004], [0.0], [0.003], [-0.002]])
    found = {s.strategy: s for s in summarise(labels, {"random": random, "better": noisy})}
    differences = [area_under_curve(labels, n) - area_under_curve(labels, r)
                   for n, r in zip(noisy, random, strict=True)]  # fmt: skip
    assert found["better"].wilcoxon_p == pytest.approx(stats.wilcoxon(differences).pvalue)
    assert found["better"].t_test_p == pytest.approx(stats.ttest_1samp(differences, 0).pvalue)


SETTINGS = SimulationSettings(
    initial_labeled=10,
    budget=6,
    rounds=2,
    train=TrainConfig(learning_rate=1e-3, max_epochs=2),
    sampler_epochs=1,
)


def test_a_run_repeats_exactly_and_never_queries_a_sample_twice() -> None:
    data = load_simulation_data("nih", "no-such-folder", pool_size=60, val_size=30)
    curve = simulate(data, "gestalt_weighted_node_dt", 1, SETTINGS)
    assert [p.labels for p in curve] == [10, 16, 22]
    queried = [i for p in curve for i in p.queried]
    assert len(queried) == 12
    assert len(set(queried)) == 12
    assert curve[-1].queried == []
    initial = set(data.train.ids[np.random.default_rng(1).choice(60, 10, False)])
    assert initial.isdisjoint(queried)
    again = simulate(data, "gestalt_weighted_node_dt", 1, SETTINGS)
    assert [(p.test, p.queried) for p in again] == [(p.test, p.queried) for p in curve]
    # Only the selection differs between strategies: the first model is the same.
    other = simulate(data, "random", 1, SETTINGS)
    assert other[0].test == curve[0].test
    assert other[1].queried != curve[1].queried


def test_a_budget_beyond_the_pool_is_refused() -> None:
    data = load_simulation_data("nih", "no-such-folder", pool_size=20, val_size=30)
    with pytest.raises(ValueError, match="22 labels requested but the pool has 20"):
        simulate(data, "random", 0, SETTINGS)
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        load_simulation_data("mnist", SHARED_DATA)


def test_simulate_command_runs_the_grid_on_ray_and_resumes(
    ray_cluster: RayCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "--datasets", "breast", "--strategies", "random", "entropy",
            "--seeds", "2", "--rounds", "1", "--epochs", "1", "--data-dir", str(SHARED_DATA),
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| entropy | 2 |" in printed
    assert "| random | 2 | " in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs_this_call"] == 4
    rows = {r["strategy"]: r for r in results["datasets"]["breast"]}
    assert 0 < rows["random"]["label_efficiency"] <= 1  # its own final mean, at the latest
    assert (tmp_path / "breast.png").stat().st_size > 10_000
    run = json.loads((tmp_path / "runs" / "breast" / "entropy" / "seed1.json").read_text())
    assert [p["labels"] for p in run] == [20, 40]
    assert len(run[0]["queried"]) == 20
    assert main(args) == 0  # everything stored: nothing runs again
    assert json.loads((tmp_path / "results.json").read_text())["runs_this_call"] == 0
    assert main([*args[:-2], "--strategies", "entropy", "--out", str(tmp_path)]) == 2
