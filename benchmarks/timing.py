"""Shared by the benchmark scripts: the best wall time of a few runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


def best_of(repeats: int, run: Callable[[], Result]) -> tuple[float, Result]:
    """Minimum seconds over ``repeats`` calls (the least disturbed one) and the last result."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result
