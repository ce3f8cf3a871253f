"""GESTALT sample scores (paper section IV.D): Node, Edge and Weighted-Node.

Pipeline: class graph (edge weights) -> per-sample columns to compare across the pool
(node weights, edges, or prior-weighted node weights) -> global average rank per column ->
mean rank per sample. Ranks are ascending, so rank 1 is the least similar value; a high mean
rank means the class saliency maps of a sample are alike (low class distinctiveness), which is
what the paper queries first. Higher score = more informative.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal, get_args

import numpy as np

from gestalt_al.ranking.graph import cosine_graph, node_weights, snap, upper_edges
from gestalt_al.ranking.prior import NodeWeightPrior
from gestalt_al.ranking.ranks import mean_rank, merge_sorted_columns, sorted_columns
from gestalt_al.ranking.validation import check_edge_weights, check_latents, check_same_graph

Variant = Literal["node", "edge", "weighted_node"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)


def check_variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise ValueError(f"unknown GESTALT variant {variant!r}; choose one of {list(VARIANTS)}")
    return variant


def rank_columns(
    edges: np.ndarray, variant: Variant, prior: NodeWeightPrior | None = None
) -> np.ndarray:
    """The per-sample values that are ranked across the pool, one column each ``[N, C]``.

    ``node``: Eq. 2, C = K. ``edge``: the upper-triangle edges, C = K(K-1)/2.
    ``weighted_node``: Eq. 5 with ``alpha_kj = (w_kj - mean_k) / std_k`` (Eq. 6), C = K.
    """
    if variant == "node":
        return node_weights(edges)
    if variant == "edge":
        return upper_edges(edges)
    if prior is None:
        raise ValueError("the 'weighted_node' variant needs the labeled set: pass train_latents")
    if prior.mean.size != edges.shape[1]:
        raise ValueError(f"the prior has K={prior.mean.size} classes, the pool {edges.shape[1]}")
    std = prior.checked_std()
    alpha = (edges - prior.mean[None, :, None]) / std[None, :, None]
    # The zero diagonal drops j == k from the sum, as in Eq. 5.
    return snap(np.einsum("nkj,nkj->nk", alpha, edges))


def gestalt_scores_from_edges(
    edges: np.ndarray, variant: str, prior: NodeWeightPrior | None = None
) -> np.ndarray:
    """GESTALT scores ``[N]`` from precomputed edge weights ``[N, K, K]`` (see ``edge_weights``)."""
    return mean_rank(rank_columns(check_edge_weights(edges), check_variant(variant), prior))


def gestalt_scores(
    latents: object, variant: str, train_latents: object | None = None
) -> np.ndarray:
    """GESTALT informativeness of each pool sample: float64 ``[N]``, higher = query first.

    ``latents`` ``[N, K, D]``: one saliency latent per class per pool sample.
    ``train_latents`` ``[M, K, D]``: the labeled set, required by ``weighted_node`` and only
    used by it. Raises ``ValueError`` naming the fault for bad shapes, K/D mismatch, NaN/inf,
    an unknown variant, or a labeled set whose node weights do not vary.
    """
    return gestalt_scores_sharded([latents], variant, train_latents)


def gestalt_scores_sharded(
    shards: Sequence[object], variant: str, train_latents: object | None = None
) -> np.ndarray:
    """The same scores for a pool held in shards, concatenated in shard order.

    Each shard is reduced to its rank columns and their sorted summary; the summaries are
    merged and every shard is ranked against the merged pool, so ranks are global.
    """
    chosen = check_variant(variant)
    if not shards:
        raise ValueError("the pool has no shards")
    named = [
        (s, f"latents shard {i}" if len(shards) > 1 else "latents") for i, s in enumerate(shards)
    ]
    pools = [check_latents(s, name) for s, name in named]
    for (_, name), pool in zip(named, pools, strict=True):
        check_same_graph(pools[0], pool, name)
    prior = None
    if train_latents is not None:
        train = check_latents(train_latents, "train_latents")
        check_same_graph(pools[0], train, "train_latents")
        if chosen == "weighted_node":
            prior = NodeWeightPrior.from_node_weights(node_weights(cosine_graph(train)))
    graphs = [cosine_graph(p) for p in pools]
    if len(graphs) == 1:
        return mean_rank(rank_columns(graphs[0], chosen, prior))
    return gestalt_scores_streamed(lambda: graphs, (chosen,), prior)[chosen]


def gestalt_scores_streamed(
    edge_shards: Callable[[], Iterable[np.ndarray]],
    variants: Sequence[Variant],
    prior: NodeWeightPrior | None = None,
) -> dict[Variant, np.ndarray]:
    """Scores of every variant for a pool whose edge weights ``[n, K, K]`` come shard by shard.

    ``edge_shards()`` is iterated twice (summaries, then ranks), so a caller can re-read shards
    from storage instead of holding them: only the sorted summaries ``[C, N]`` stay in memory.
    """
    summaries: dict[Variant, list[np.ndarray]] = {v: [] for v in variants}
    for edges in edge_shards():
        for variant in variants:
            summaries[variant].append(sorted_columns(rank_columns(edges, variant, prior)))
    if not any(summaries.values()):
        raise ValueError("the pool has no shards")
    merged = {v: merge_sorted_columns(s) for v, s in summaries.items()}
    scores: dict[Variant, list[np.ndarray]] = {v: [] for v in variants}
    for edges in edge_shards():
        for variant in variants:
            scores[variant].append(mean_rank(rank_columns(edges, variant, prior), merged[variant]))
    return {v: np.concatenate(s) for v, s in scores.items()}
