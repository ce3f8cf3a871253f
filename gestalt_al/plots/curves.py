"""Learning curves: the metric against labels, one line per strategy, a band over seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


# Baselines dashed, GESTALT solid, ablations dotted: the families read apart at a glance.
def _style(strategy: str) -> str:
    if strategy.endswith(("_inverted", "_image")):
        return ":"
    return "-" if strategy.startswith("gestalt") else "--"


def learning_curves(
    path: str | Path,
    labels: np.ndarray,
    curves: dict[str, np.ndarray],
    title: str,
    metric: str,
) -> None:
    """``curves[strategy]`` is ``[seeds, points]``; the band is mean +- one standard deviation."""
    figure, axes = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20")
    for i, (strategy, runs) in enumerate(sorted(curves.items())):
        mean, std = runs.mean(axis=0), runs.std(axis=0)
        colour = "black" if strategy == "random" else colours(i % 20)
        axes.plot(labels, mean, _style(strategy), color=colour, marker="o", markersize=3,
                  linewidth=2.2 if strategy == "random" else 1.4,
                  label=f"{strategy} ({runs.shape[0]} seeds)")  # fmt: skip
        axes.fill_between(labels, mean - std, mean + std, color=colour, alpha=0.08)
    axes.set_xlabel("labeled samples")
    axes.set_ylabel(f"test {metric}")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(Path(path), dpi=110)
    plt.close(figure)
