"""Turn per-sample scores into a query list: the b highest, deterministic under ties."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Selection:
    """The strategy contract: pool indices to query, most informative first, and their scores."""

    indices: np.ndarray  # [b] int64 positions in the pool
    scores: np.ndarray  # [b] float64, non-increasing


def select_top(scores: np.ndarray, ids: np.ndarray, budget: int) -> Selection:
    """The ``budget`` highest scores; equal scores are ordered by sample id (ascending)."""
    s = np.asarray(scores, dtype=np.float64)
    sample_ids = np.asarray(ids)
    if s.ndim != 1 or sample_ids.shape != s.shape:
        raise ValueError(f"scores {s.shape} and ids {sample_ids.shape} must be 1-D of equal length")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    if budget > s.size:
        raise ValueError(f"budget {budget} is larger than the pool ({s.size} samples)")
    if np.unique(sample_ids).size != sample_ids.size:
        raise ValueError("sample ids are not unique, so ties could not be broken deterministically")
    # Everything strictly above the b-th largest score is in; ties at it are settled by id.
    threshold = np.partition(s, s.size - budget)[s.size - budget]
    candidates = np.flatnonzero(s >= threshold)
    order = np.lexsort((sample_ids[candidates], -s[candidates]))[:budget]
    chosen = candidates[order].astype(np.int64)
    return Selection(indices=chosen, scores=s[chosen])
