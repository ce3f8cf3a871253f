"""Global average ranks per column, for a pool held in one array or in shards.

A shard is summarised by its columns sorted ascending (``sorted_columns``). Merging those
summaries gives the whole pool's sorted columns, and the rank of any value is then two binary
searches: ``left`` = how many pool values are smaller, ``right`` = how many are smaller or
equal, so the average (tie-aware, 1-based) rank is ``(left + right + 1) / 2``. This is what
the ranking actor does over shards. A single array is the one-shard case, where tie groups are
read straight off the radix-sorted column (``_radix``) instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from gestalt_al.ranking._radix import ascending_order, within_average_ranks


def sorted_columns(values: np.ndarray) -> np.ndarray:
    """``[n, C]`` -> ``[C, n]`` float64 with each column sorted ascending (a shard's summary)."""
    return np.sort(np.ascontiguousarray(values.T, dtype=np.float64), axis=1)


def merge_sorted_columns(summaries: Sequence[np.ndarray]) -> np.ndarray:
    """Merge shard summaries ``[C, n_s]`` into the pool's ``[C, sum n_s]`` sorted columns."""
    if not summaries:
        raise ValueError("cannot merge an empty list of shard summaries")
    widths = {s.shape[0] for s in summaries}
    if len(widths) != 1:
        raise ValueError(f"shard summaries disagree on the number of columns: {sorted(widths)}")
    # Stable sort (timsort) finds the pre-sorted runs, so this is a k-way merge in practice.
    return np.sort(np.concatenate(summaries, axis=1), axis=1, kind="stable")


def average_ranks(values: np.ndarray, pool_sorted: np.ndarray | None = None) -> np.ndarray:
    """1-based average ranks of each column of ``values`` ``[n, C]``, as float64 ``[n, C]``.

    Ranks are ascending (rank 1 = smallest) and tied values share the mean of their ranks.
    Without ``pool_sorted`` the ranks are within ``values``; with it (``[C, N]`` from
    ``merge_sorted_columns``) they are global ranks among the whole pool that ``values`` is
    one shard of.
    """
    ranks: np.ndarray = np.column_stack(list(_column_ranks(values, pool_sorted)))
    return ranks


def mean_rank(values: np.ndarray, pool_sorted: np.ndarray | None = None) -> np.ndarray:
    """The GESTALT score: each sample's average rank over the columns (Eqs. 3 and 4)."""
    total = np.zeros(values.shape[0], dtype=np.float64)
    for ranks in _column_ranks(values, pool_sorted):
        total += ranks
    total /= values.shape[1]
    return total


def _column_ranks(values: np.ndarray, pool_sorted: np.ndarray | None) -> Iterator[np.ndarray]:
    """Ranks one column at a time, so a score never holds all ``[n, C]`` ranks at once."""
    cols = np.ascontiguousarray(values.T, dtype=np.float64)
    if pool_sorted is not None and pool_sorted.shape[0] != cols.shape[0]:
        raise ValueError(
            f"pool summary has {pool_sorted.shape[0]} columns but values have {cols.shape[0]}"
        )
    for c in range(cols.shape[0]):
        if pool_sorted is None:
            yield within_average_ranks(cols[c])
            continue
        order = ascending_order(cols[c])
        ascending = cols[c, order]  # sorted queries keep the binary searches cache-friendly
        left = np.searchsorted(pool_sorted[c], ascending, side="left")
        right = np.searchsorted(pool_sorted[c], ascending, side="right")
        ranks = np.empty(cols.shape[1], dtype=np.float64)
        ranks[order] = (left + right + 1) / 2.0
        yield ranks
