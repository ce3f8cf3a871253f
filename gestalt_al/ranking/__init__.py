"""GESTALT ranking: class graphs from saliency latents, global per-column ranks, selection.

Pure numpy; importing it starts nothing.
"""

from gestalt_al.ranking.gestalt import (
    VARIANTS,
    Variant,
    gestalt_scores,
    gestalt_scores_from_edges,
    gestalt_scores_sharded,
    rank_columns,
)
from gestalt_al.ranking.graph import edge_weights, node_weights, upper_edges
from gestalt_al.ranking.prior import NodeWeightPrior
from gestalt_al.ranking.ranks import average_ranks, mean_rank, merge_sorted_columns, sorted_columns
from gestalt_al.ranking.selection import Selection, select_top

__all__ = [
    "VARIANTS",
    "NodeWeightPrior",
    "Selection",
    "Variant",
    "average_ranks",
    "edge_weights",
    "gestalt_scores",
    "gestalt_scores_from_edges",
    "gestalt_scores_sharded",
    "mean_rank",
    "merge_sorted_columns",
    "node_weights",
    "rank_columns",
    "select_top",
    "sorted_columns",
    "upper_edges",
]
