"""Tables and PNG curves from the stored runs of a grid."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gestalt_al.plots.curves import learning_curves
from gestalt_al.simulation.grid import load_runs
from gestalt_al.simulation.summary import StrategySummary, summarise

METRIC = "macro_auc"


def dataset_report(
    out_dir: str | Path, dataset: str, figure_dir: str | Path | None
) -> list[StrategySummary]:
    """Summaries over the seeds every strategy has finished (pairing needs equal seeds),
    best area first, and the curves as ``<figure_dir>/<dataset>.png``."""
    runs = load_runs(out_dir, dataset)
    if "random" not in runs:
        raise ValueError(f"{dataset}: no finished random runs in {out_dir}; run the grid first")
    seeds = min(len(r) for r in runs.values())
    labels = np.array([point.labels for point in runs["random"][0]], dtype=np.float64)
    curves = {
        name: np.array([[point.test[METRIC] for point in run] for run in r[:seeds]])
        for name, r in runs.items()
    }
    if figure_dir is not None:
        Path(figure_dir).mkdir(parents=True, exist_ok=True)
        title = f"{dataset}: test macro ROC-AUC, mean +- std over {seeds} seeds"
        learning_curves(Path(figure_dir) / f"{dataset}.png", labels, curves, title, METRIC)
    return sorted(summarise(labels, curves), key=lambda s: -s.area_mean)


def format_table(dataset: str, summaries: list[StrategySummary]) -> str:
    """Markdown: area and its ratio to random's (the baseline, measured in the same run)."""
    random_area = next(s.area_mean for s in summaries if s.strategy == "random")
    rows = [
        f"**{dataset}**\n",
        "| strategy | seeds | area under curve | ratio vs random | final AUC | labels to reach "
        "random's final | paired gain | Wilcoxon p | t-test p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        reach = "not reached" if math.isinf(s.label_efficiency) else f"{s.label_efficiency:.0%}"
        rows.append(
            f"| {s.strategy} | {s.seeds} | {s.area_mean:.4f} +- {s.area_std:.4f} | "
            f"{s.area_mean / random_area:.3f} | {s.final_mean:.4f} +- {s.final_std:.4f} | "
            f"{reach} | {s.area_gain:+.4f} | {_p(s.wilcoxon_p)} | {_p(s.t_test_p)} |"
        )
    return "\n".join(rows)


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def as_records(summaries: list[StrategySummary]) -> list[dict[str, object]]:
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
         for k, v in asdict(s).items()}
        for s in summaries
    ]  # fmt: skip
