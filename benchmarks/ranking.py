"""Ranking benchmark: GESTALT scores for N = 1e4..1e6 pool samples, K = 14, D = 64.

For every N and variant it times our scores from precomputed edge weights and from latents,
and the naive reference on the same edge weights: the same column values ranked with
``scipy.stats.rankdata`` one column at a time. Runs on one core (threads pinned to 1).
Prints a table and writes ``benchmarks/results/ranking.json``.

    .venv/bin/python benchmarks/ranking.py [--sizes 10000 100000 1000000] [--repeats 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from timing import best_of  # noqa: E402

from gestalt_al.ranking import (  # noqa: E402
    VARIANTS,
    NodeWeightPrior,
    edge_weights,
    gestalt_scores,
    gestalt_scores_from_edges,
    node_weights,
    rank_columns,
)

K, D, M = 14, 64, 500
RESULTS = Path(__file__).parent / "results" / "ranking.json"


def reference_scores(edges: np.ndarray, variant: str, prior: NodeWeightPrior | None) -> np.ndarray:
    """Same columns, ranked the naive way: rankdata per column, then the mean."""
    columns = rank_columns(edges, variant, prior)  # type: ignore[arg-type]
    ranks = np.column_stack([rankdata(columns[:, c]) for c in range(columns.shape[1])])
    mean: np.ndarray = ranks.mean(axis=1)
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train = rng.normal(size=(M, K, D)).astype(np.float32)
    prior = NodeWeightPrior.from_node_weights(node_weights(edge_weights(train)))
    gestalt_scores(train[:10], "node")  # load the compiled kernels before timing
    rows = []
    for n in args.sizes:
        latents = rng.normal(size=(n, K, D)).astype(np.float32)
        t_edges, edges = best_of(1, partial(edge_weights, latents))
        for variant in VARIANTS:
            used_prior = prior if variant == "weighted_node" else None
            t_ours, ours = best_of(
                args.repeats, partial(gestalt_scores_from_edges, edges, variant, used_prior)
            )
            t_ref, ref = best_of(1, partial(reference_scores, edges, variant, used_prior))
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
            t_latents, _ = best_of(
                1, partial(gestalt_scores, latents, variant, train if used_prior else None)
            )
            rows.append(
                {
                    "n": n,
                    "variant": variant,
                    "from_edges_s": t_ours,
                    "rankdata_reference_s": t_ref,
                    "speedup": t_ref / t_ours,
                    "from_latents_s": t_latents,
                    "edge_weights_s": t_edges,
                    "ns_per_n_log2_n": 1e9 * t_ours / (n * math.log2(n)),
                }
            )
    header = (
        f"{'N':>9} {'variant':<14} {'from edges':>11} {'rankdata ref':>13} {'ratio':>6} "
        f"{'from latents':>13} {'ns/(N log2 N)':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['n']:>9} {r['variant']:<14} {r['from_edges_s']:>10.3f}s "
            f"{r['rankdata_reference_s']:>12.3f}s {r['speedup']:>5.1f}x "
            f"{r['from_latents_s']:>12.3f}s {r['ns_per_n_log2_n']:>14.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": platform.processor() or platform.machine(), "K": K, "D": D, "rows": rows},
            indent=2,
        )
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
