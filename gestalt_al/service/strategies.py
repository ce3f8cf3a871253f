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
    """All strategies' scores; ``shards()`` is read three times (prior and per-sample
    scalars, GESTALT summaries, GESTALT ranks), and only one shard's weights are held at once.

    ``gestalt_weighted_node`` is left out when fewer than two labeled samples with differing
    node weights exist (its z-scores would be undefined); ``strategies`` then lacks it.
    """
    prior, scalars = _scan(shards(), labeled)
    if not scalars:
        raise ValueError("every pool sample is labeled: nothing is left to rank")
    indices = np.concatenate([i for i, _, _ in scalars])
    order = np.argsort(indices, kind="stable")

    def candidate_edges() -> Iterator[np.ndarray]:
        for shard in shards():
            keep = ~np.isin(shard.indices, labeled)
            if keep.any():
                yield shard.take(keep).full_edges()

    variants = tuple(GESTALT_STRATEGIES.values()) if prior else ("node", "edge")
    gestalt = gestalt_scores_streamed(
        candidate_edges,
        variants,  # type: ignore[arg-type]  # literal names from GESTALT_STRATEGIES
        prior,
    )
    scores = {name: gestalt[v] for name, v in GESTALT_STRATEGIES.items() if v in gestalt}
    scores["uncertainty"] = np.concatenate([u for _, u, _ in scalars])
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little")
    scores["random"] = np.random.default_rng(seed).random(pool_size)[indices]
    if sampler_strategy is not None:
        sampler = -np.concatenate([d for _, _, d in scalars if d is not None])
        if sampler.size != indices.size:
            raise ValueError("some shards have no sampler scores")
        scores[sampler_strategy] = sampler
        both = np.column_stack([scores["gestalt_node"], sampler])
        scores["hybrid"] = average_ranks(both).mean(axis=1)
    return RoundScores(indices[order], {k: v[order] for k, v in scores.items()})


Scalars = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # indices, entropy, sampler


def _scan(
    shards: Iterator[ShardWeights], labeled: np.ndarray
) -> tuple[NodeWeightPrior | None, list[Scalars]]:
    """The Weighted-Node prior of the labeled samples' node weights, in pool order (the order
    ``gestalt_scores`` sees them in; None if they cannot define z-scores), and the candidates'
    per-sample scalars."""
    found: list[tuple[np.ndarray, np.ndarray]] = []
    scalars: list[Scalars] = []
    for shard in shards:
        is_labeled = np.isin(shard.indices, labeled)
        if is_labeled.any():
            found.append((shard.indices[is_labeled], shard.node[is_labeled]))
        if not is_labeled.all():
            part = shard.take(~is_labeled)
            scalars.append((part.indices, part.uncertainty, part.sampler_scores))
    if not found:
        return None, scalars
    order = np.argsort(np.concatenate([i for i, _ in found]))
    prior = NodeWeightPrior.from_node_weights(np.concatenate([n for _, n in found])[order])
    return (prior if bool((prior.std >= MIN_STD).all()) else None), scalars
