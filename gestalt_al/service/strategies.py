"""Every selection strategy's global scores for one round, from the shards' stored weights.

Labeled samples are dropped from the candidates and feed the Weighted-Node prior instead.
Scores follow the strategy contract: one float per candidate, higher = query first.

- ``gestalt_node`` / ``gestalt_edge`` / ``gestalt_weighted_node``: GESTALT (paper IV.D), ranked
  over the whole pool with ``gestalt_scores_streamed`` (the shards are read twice, never held).
- ``mvaal`` / ``vaal``: the negated discriminator score of the round's sampler (lowest D first);
  which name applies depends on whether the sampler was trained with an auxiliary modality.
- ``hybrid``: the mean of a candidate's rank under ``gestalt_node`` and under the sampler, so
  a sample both methods rate highly comes first (needs a sampler).
- ``uncertainty``: the task model's predictive entropy.
- ``random``: uniform scores seeded by the round, so a round's random query is reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from gestalt_al.ranking import NodeWeightPrior, average_ranks
from gestalt_al.ranking.gestalt import gestalt_scores_streamed
from gestalt_al.ranking.prior import MIN_STD
from gestalt_al.service.shard_results import ShardWeights

GESTALT_STRATEGIES = {
    "gestalt_node": "node",
    "gestalt_edge": "edge",
    "gestalt_weighted_node": "weighted_node",
}
SAMPLER_STRATEGIES = ("mvaal", "vaal")
STRATEGIES = (*GESTALT_STRATEGIES, *SAMPLER_STRATEGIES, "hybrid", "random", "uncertainty")


@dataclass(frozen=True)
class RoundScores:
    candidates: np.ndarray  # [N_c] int64 pool indices of the unlabeled samples, ascending
    scores: dict[str, np.ndarray]  # strategy -> [N_c]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"candidates": self.candidates, **self.scores}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> RoundScores:
        scores = {k: v for k, v in arrays.items() if k != "candidates"}
        return cls(arrays["candidates"], scores)


def round_scores(
    shards: Callable[[], Iterator[ShardWeights]],
    labeled: np.ndarray,
    pool_size: int,
    sampler_strategy: str | None,
    seed_text: str,
) -> RoundScores:
    """All strategies' scores; ``shards()`` is read three times (prior, summaries, ranks).

    ``gestalt_weighted_node`` is left out when fewer than two labeled samples with differing
    node weights exist (its z-scores would be undefined); ``strategies`` then lacks it.
    """
    prior = _prior(shards(), labeled)

    def candidates() -> Iterator[ShardWeights]:
        for shard in shards():
            keep = ~np.isin(shard.indices, labeled)
            if keep.any():
                yield shard.take(keep)

    parts = list(candidates())  # scalars only are kept: indices, entropy, sampler scores
    if not parts:
        raise ValueError("every pool sample is labeled: nothing is left to rank")
    indices = np.concatenate([p.indices for p in parts])
    order = np.argsort(indices, kind="stable")
    variants = tuple(GESTALT_STRATEGIES.values()) if prior else ("node", "edge")
    gestalt = gestalt_scores_streamed(
        lambda: (s.full_edges() for s in candidates()),
        variants,  # type: ignore[arg-type]  # literal names from GESTALT_STRATEGIES
        prior,
    )
    scores = {name: gestalt[v] for name, v in GESTALT_STRATEGIES.items() if v in gestalt}
    scores["uncertainty"] = np.concatenate([p.uncertainty for p in parts])
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little")
    scores["random"] = np.random.default_rng(seed).random(pool_size)[indices]
    if sampler_strategy is not None:
        sampler = -np.concatenate([p.sampler_scores for p in parts if p.sampler_scores is not None])
        if sampler.size != indices.size:
            raise ValueError("some shards have no sampler scores")
        scores[sampler_strategy] = sampler
        both = np.column_stack([scores["gestalt_node"], sampler])
        scores["hybrid"] = average_ranks(both).mean(axis=1)
    return RoundScores(indices[order], {k: v[order] for k, v in scores.items()})


def _prior(shards: Iterator[ShardWeights], labeled: np.ndarray) -> NodeWeightPrior | None:
    """Weighted-Node statistics of the labeled samples' node weights, in pool order (the
    order ``gestalt_scores`` sees them in); None if they cannot define z-scores."""
    found = [(s.indices[m], s.node[m]) for s in shards if (m := np.isin(s.indices, labeled)).any()]
    if not found:
        return None
    indices = np.concatenate([i for i, _ in found])
    prior = NodeWeightPrior.from_node_weights(
        np.concatenate([n for _, n in found])[np.argsort(indices)]
    )
    return prior if bool((prior.std >= MIN_STD).all()) else None
