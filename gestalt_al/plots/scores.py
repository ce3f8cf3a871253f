"""Histogram of discriminator scores, labeled vs unlabeled (the M-VAAL paper's Fig. 2)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def score_histogram(
    path: str | Path,
    labeled: np.ndarray,
    unlabeled: np.ndarray,
    queried: np.ndarray,
    title: str,
) -> None:
    """Both sets' score distributions on shared bins; ``queried`` (the b lowest unlabeled
    scores) is marked, so one sees that the queries lie away from the labeled peak."""
    if len(labeled) == 0 or len(unlabeled) == 0:
        raise ValueError("need scores of at least one labeled and one unlabeled sample")
    every = np.concatenate([labeled, unlabeled])
    bins = np.linspace(float(every.min()), float(every.max()) + 1e-12, 40).tolist()
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(unlabeled, bins=bins, alpha=0.6, label=f"unlabeled ({len(unlabeled)})")
    axes.hist(labeled, bins=bins, alpha=0.6, label=f"labeled ({len(labeled)})")
    if len(queried):
        axes.axvspan(bins[0], float(np.max(queried)), color="red", alpha=0.12,
                     label=f"queried: {len(queried)} lowest")  # fmt: skip
    axes.set_xlabel("discriminator score (higher = looks labeled)")
    axes.set_ylabel("samples")
    axes.set_title(title, fontsize=10)
    axes.legend()
    figure.tight_layout()
    figure.savefig(Path(path), dpi=110)
    plt.close(figure)
