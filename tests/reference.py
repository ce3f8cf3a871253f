"""A deliberately naive GESTALT written straight from the paper's equations, loop by loop.

Tests compare the vectorised implementation against it; it shares no code with gestalt_al,
only the documented tie tolerance: similarities and their sums are compared at 12 decimals.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.stats import rankdata


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    norms = sum(float(x) ** 2 for x in a) * sum(float(y) ** 2 for y in b)
    return 0.0 if norms == 0 else round(max(-1.0, min(1.0, dot / math.sqrt(norms))), 12)


def graph(sample: np.ndarray) -> np.ndarray:
    k = sample.shape[0]
    w = np.zeros((k, k))
    for i, j in itertools.permutations(range(k), 2):
        w[i, j] = cosine(sample[i].astype(np.float64), sample[j].astype(np.float64))
    return w


def node(w: np.ndarray) -> list[float]:
    k = w.shape[0]
    return [round(sum(w[i, j] for j in range(k) if j != i), 12) for i in range(k)]


def scores(latents: np.ndarray, variant: str, train: np.ndarray | None = None) -> np.ndarray:
    graphs = [graph(s) for s in latents]
    k = latents.shape[1]
    if variant == "node":
        columns = np.array([node(w) for w in graphs])
    elif variant == "edge":
        columns = np.array(
            [[w[i, j] for i, j in itertools.combinations(range(k), 2)] for w in graphs]
        )
    else:
        assert train is not None
        train_nodes = np.array([node(graph(s)) for s in train])
        mean, std = train_nodes.mean(axis=0), train_nodes.std(axis=0)
        columns = np.array(
            [
                [
                    round(
                        sum((w[i, j] - mean[i]) / std[i] * w[i, j] for j in range(k) if j != i), 12
                    )
                    for i in range(k)
                ]
                for w in graphs
            ]
        )
    ranks = np.column_stack([rankdata(columns[:, c]) for c in range(columns.shape[1])])
    score: np.ndarray = ranks.mean(axis=1)
    return score
