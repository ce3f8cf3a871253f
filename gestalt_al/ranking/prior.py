"""The Weighted-Node prior (paper Eqs. 6-8): per-class node-weight statistics of the labeled set.

Kept as running moments (count, mean, sum of squared deviations) so that each AL round can
add its newly labeled samples without revisiting the old ones (Chan et al.'s pairwise update).
Eq. 8 as printed drops the square; this is the population standard deviation it intends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this, a class's node weights are treated as constant over the labeled set.
MIN_STD = 1e-12


@dataclass(frozen=True)
class NodeWeightPrior:
    count: int
    mean: np.ndarray  # [K] mean node weight per class over the labeled samples (Eq. 7)
    m2: np.ndarray  # [K] sum of squared deviations from that mean

    @classmethod
    def from_node_weights(cls, node_w: np.ndarray) -> NodeWeightPrior:
        """Statistics of labeled node weights ``[M, K]`` (Eq. 2 applied to the labeled set)."""
        w = np.asarray(node_w, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] < 1:
            raise ValueError(f"labeled node weights must be shaped [M>=1, K], got {w.shape}")
        mean = w.mean(axis=0)
        return cls(count=w.shape[0], mean=mean, m2=((w - mean) ** 2).sum(axis=0))

    def update(self, node_w: np.ndarray) -> NodeWeightPrior:
        """The prior after adding newly labeled samples' node weights ``[m, K]``."""
        new = NodeWeightPrior.from_node_weights(node_w)
        if new.mean.shape != self.mean.shape:
            raise ValueError(
                f"new labeled samples have K={new.mean.size} classes, "
                f"the prior has {self.mean.size}"
            )
        total = self.count + new.count
        delta = new.mean - self.mean
        return NodeWeightPrior(
            count=total,
            mean=self.mean + delta * (new.count / total),
            m2=self.m2 + new.m2 + delta**2 * (self.count * new.count / total),
        )

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per class (Eq. 8 with its square restored)."""
        return np.sqrt(self.m2 / self.count)

    def checked_std(self) -> np.ndarray:
        """``std``, refusing zero spread: the z-scores of Eq. 6 would be undefined."""
        std = self.std
        flat = np.flatnonzero(std < MIN_STD)
        if flat.size:
            raise ValueError(
                f"Weighted-Node needs node weights that vary over the labeled set, but class "
                f"index(es) {flat.tolist()} have standard deviation < {MIN_STD:g} over "
                f"M={self.count} labeled sample(s). Label at least 2 samples whose saliency "
                f"latents differ, or use the 'node' variant."
            )
        return std
