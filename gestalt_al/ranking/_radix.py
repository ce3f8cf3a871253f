"""Compiled kernels that rank one float64 column in O(N).

An LSD radix sort on order-preserving 64-bit keys. numpy's comparison argsort costs about as
much as scipy's rankdata, and ranking every column of a million-sample pool is the hot path of
each AL round (README, "Ranking benchmark"). 8-bit digits keep every histogram in L1 and all
eight histograms are filled in one read of the keys.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_DIGIT_BITS = 8
_BINS = 1 << _DIGIT_BITS
_PASSES = 64 // _DIGIT_BITS
_DIGIT_MASK = np.uint64(_BINS - 1)
_SIGN = np.uint64(1) << np.uint64(63)


@njit(cache=True, nogil=True)
def _radix_sort(values: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radix-sort ``values``; ``order`` is ``arange(n)``. Returns (sorted keys, permutation).

    Keys sort like the floats; ``-0.0`` is folded into ``+0.0`` so the two tie, as ``==`` says.
    """
    n = values.size
    bits = (values + 0.0).view(np.uint64)
    keys = np.empty(n, np.uint64)
    hist = np.zeros((_PASSES, _BINS), np.int64)
    for i in range(n):
        b = bits[i]
        k = ~b if b & _SIGN else b | _SIGN
        keys[i] = k
        for p in range(_PASSES):
            hist[p, (k >> np.uint64(p * _DIGIT_BITS)) & _DIGIT_MASK] += 1
    keys_out = np.empty_like(keys)
    order_out = np.empty_like(order)
    for p in range(_PASSES):
        counts = hist[p]
        if counts.max() == n:  # every key shares this digit: nothing to reorder
            continue
        total = 0
        for d in range(_BINS):
            c = counts[d]
            counts[d] = total
            total += c
        shift = np.uint64(p * _DIGIT_BITS)
        for i in range(n):
            k = keys[i]
            q = counts[(k >> shift) & _DIGIT_MASK]
            counts[(k >> shift) & _DIGIT_MASK] = q + 1
            keys_out[q] = k
            order_out[q] = order[i]
        keys, keys_out = keys_out, keys
        order, order_out = order_out, order
    return keys, order


@njit(cache=True, nogil=True)
def _tie_averaged(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Scatter 1-based ranks back to input positions; equal keys share their mean rank."""
    n = keys.size
    ranks = np.empty(n, np.float64)
    start = 0
    for i in range(1, n + 1):
        if i == n or keys[i] != keys[start]:
            mean_rank = (start + 1 + i) / 2.0
            for j in range(start, i):
                ranks[order[j]] = mean_rank
            start = i
    return ranks


def _identity(n: int) -> np.ndarray:
    # 32-bit positions move a third less memory per pass; shards that large are rare.
    return np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)


def ascending_order(values: np.ndarray) -> np.ndarray:
    """The permutation that sorts a float64 vector ascending (like ``np.argsort``, not stable)."""
    return _radix_sort(values, _identity(values.size))[1]


def within_average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based average ranks of a float64 vector among itself (ties share their mean rank)."""
    return _tie_averaged(*_radix_sort(values, _identity(values.size)))
