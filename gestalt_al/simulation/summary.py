"""From learning curves to the numbers a reader compares: area under the curve, final metric,
label efficiency against random, and a paired test across seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def area_under_curve(labels: np.ndarray, metric: np.ndarray) -> float:
    """Trapezoidal area divided by the label range: the curve's mean height, in metric units,
    so sets with different budgets read alike."""
    x, y = np.asarray(labels, dtype=np.float64), np.asarray(metric, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2 or not bool(np.all(np.diff(x) > 0)):
        raise ValueError("labels must be >= 2 increasing counts with one metric value each")
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def labels_to_reach(labels: np.ndarray, metric: np.ndarray, target: float) -> float:
    """The label count at which the piecewise-linear curve first reaches ``target``
    (inf if it never does)."""
    x, y = np.asarray(labels, dtype=np.float64), np.asarray(metric, dtype=np.float64)
    if y[0] >= target:
        return float(x[0])
    for i in range(1, x.size):
        if y[i] >= target:
            return float(x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))
    return math.inf


@dataclass(frozen=True)
class StrategySummary:
    strategy: str
    seeds: int
    area_mean: float
    area_std: float
    final_mean: float
    final_std: float
    label_efficiency: float  # labels to reach random's final mean / random's final labels
    area_gain: float  # mean paired difference of the area against random
    wilcoxon_p: float  # two-sided; nan for random itself or when every difference is 0
    t_test_p: float


def summarise(
    labels: np.ndarray, curves: dict[str, np.ndarray], baseline: str = "random"
) -> list[StrategySummary]:
    """``curves[strategy]`` is ``[seeds, points]`` of the metric at ``labels``; seed i of every
    strategy shares the initial set, so differences are paired by seed."""
    if baseline not in curves:
        raise ValueError(f"the {baseline!r} curves are needed as the baseline")
    areas = {name: np.array([area_under_curve(labels, c) for c in runs])
             for name, runs in curves.items()}  # fmt: skip
    target = float(curves[baseline][:, -1].mean())
    found = []
    for name, runs in curves.items():
        if runs.shape[0] != curves[baseline].shape[0]:
            raise ValueError(f"{name} has {runs.shape[0]} seeds, {baseline} has a different count")
        gain = areas[name] - areas[baseline]
        wilcoxon = t_test = math.nan
        if name != baseline and bool(np.any(gain != 0)) and gain.size > 1:
            wilcoxon = float(stats.wilcoxon(gain).pvalue)
            t_test = float(stats.ttest_1samp(gain, 0.0).pvalue)
        found.append(
            StrategySummary(
                name,
                int(runs.shape[0]),
                float(areas[name].mean()),
                float(areas[name].std()),
                float(runs[:, -1].mean()),
                float(runs[:, -1].std()),
                labels_to_reach(labels, runs.mean(axis=0), target) / float(labels[-1]),
                float(gain.mean()),
                wilcoxon,
                t_test,
            )
        )
    return found
