"""Validation and test metrics for task models, with scikit-learn's definitions.

Per-class ROC-AUC and average precision are only defined for a class that has both positive
and negative samples; on small active-learning sets some classes have neither, so those get
NaN and the macro means run over the classes that can be scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn import metrics

from gestalt_al.models.config import TASKS, Task

LogValue = str | int | float | None | list[float | None]


@dataclass(frozen=True)
class ClassificationMetrics:
    """Scores of K-class predictions; fields that do not apply to the task are None."""

    task: Task
    per_class_auc: tuple[float, ...]
    macro_auc: float
    mean_average_precision: float
    num_scored_classes: int
    label_ranking_average_precision: float | None = None
    ranking_loss: float | None = None
    accuracy: float | None = None

    def as_dict(self) -> dict[str, LogValue]:
        """Plain values for loggers and JSON (unscorable classes' NaN AUC becomes None)."""
        return {
            "task": self.task,
            "macro_auc": self.macro_auc,
            "mean_average_precision": self.mean_average_precision,
            "num_scored_classes": self.num_scored_classes,
            "per_class_auc": [None if math.isnan(auc) else auc for auc in self.per_class_auc],
            "label_ranking_average_precision": self.label_ranking_average_precision,
            "ranking_loss": self.ranking_loss,
            "accuracy": self.accuracy,
        }


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, task: Task
) -> ClassificationMetrics:
    """ROC-AUC per class and macro, mAP, and LRAP/ranking loss (multi-label) or accuracy.

    ``probabilities`` is ``[N, K]``; ``labels`` is ``[N, K]`` multi-hot for ``multi_label``
    or ``[N]`` class indices for ``multi_class`` (scored one-vs-rest per class). LRAP and
    ranking loss rank labels within a sample, so a single-label head gets None for both.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    scores = _check_probabilities(probabilities, task)
    targets = check_labels(labels, scores.shape[0], scores.shape[1], task)
    one_hot = _one_hot(targets, scores.shape[1], task)
    scored = _scorable(one_hot)
    if not scored.any():
        raise ValueError(
            "no class has both positive and negative samples, so ROC-AUC is undefined for all"
        )
    per_class_auc = np.full(scores.shape[1], np.nan)
    per_class_ap = np.full(scores.shape[1], np.nan)
    for k in np.flatnonzero(scored):
        per_class_auc[k] = metrics.roc_auc_score(one_hot[:, k], scores[:, k])
        per_class_ap[k] = metrics.average_precision_score(one_hot[:, k], scores[:, k])
    multi_label = task == "multi_label"
    ranked = multi_label and scores.shape[1] >= 2  # sklearn's ranking scores need K >= 2
    return ClassificationMetrics(
        task=task,
        per_class_auc=tuple(float(auc) for auc in per_class_auc),
        macro_auc=float(per_class_auc[scored].mean()),
        mean_average_precision=float(per_class_ap[scored].mean()),
        num_scored_classes=int(scored.sum()),
        label_ranking_average_precision=(
            float(metrics.label_ranking_average_precision_score(targets, scores))
            if ranked
            else None
        ),
        ranking_loss=float(metrics.label_ranking_loss(targets, scores)) if ranked else None,
        accuracy=None if multi_label else float(np.mean(scores.argmax(axis=1) == targets)),
    )


def scorable_classes(labels: np.ndarray, num_classes: int, task: Task) -> np.ndarray:
    """Boolean [K]: which classes have both a positive and a negative sample."""
    targets = check_labels(labels, len(labels), num_classes, task)
    return _scorable(_one_hot(targets, num_classes, task))


def _scorable(one_hot: np.ndarray) -> np.ndarray:
    scorable: np.ndarray = one_hot.min(axis=0) < one_hot.max(axis=0)
    return scorable


def _one_hot(targets: np.ndarray, num_classes: int, task: Task) -> np.ndarray:
    return targets if task == "multi_label" else np.eye(num_classes, dtype=np.int64)[targets]


def check_labels(
    labels: np.ndarray, num_samples: int, num_classes: int, task: Task, name: str = "labels"
) -> np.ndarray:
    """Labels in the task's form as int64: ``[N, K]`` 0/1 or ``[N]`` indices in ``0..K-1``."""
    array = np.asarray(labels)
    expected = (num_samples, num_classes) if task == "multi_label" else (num_samples,)
    if array.shape != expected:
        form = "[N, K] multi-hot" if task == "multi_label" else "[N] class indices"
        raise ValueError(
            f"{name}: {task} labels must be {form} shaped {list(expected)}, got {list(array.shape)}"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{name}: labels must be numbers, got dtype {array.dtype}")
    if task == "multi_label":
        if not np.isin(array, (0, 1)).all():
            raise ValueError(
                f"{name}: multi_label labels must be 0/1, found {_outside(array, [0, 1])}"
            )
    elif not np.isin(array, range(num_classes)).all():
        raise ValueError(
            f"{name}: multi_class labels must be integers in 0..{num_classes - 1}, "
            f"found {_outside(array, range(num_classes))}"
        )
    return array.astype(np.int64)


def _outside(array: np.ndarray, allowed: Sequence[int]) -> list[float]:
    """Up to five offending values, for error messages."""
    return [float(v) for v in np.unique(array[~np.isin(array, allowed)])[:5]]


def _check_probabilities(probabilities: np.ndarray, task: Task) -> np.ndarray:
    scores = np.asarray(probabilities)
    min_classes = 2 if task == "multi_class" else 1
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < min_classes:
        raise ValueError(
            f"probabilities must be [N, K] with N >= 1 and K >= {min_classes} for {task}, "
            f"got shape {list(scores.shape)}"
        )
    if not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"probabilities must be floating point, got dtype {scores.dtype}")
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
        raise ValueError(
            f"probabilities contain NaN or inf in {bad.size} sample(s), first at index {bad[0]}"
        )
    return scores.astype(np.float64)
