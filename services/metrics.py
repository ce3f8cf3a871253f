"""The service's Prometheus metrics (exported through Ray's metrics agent with a ``ray_``
prefix). Created on first use in each process, since Ray metrics belong to the process."""

from __future__ import annotations

import threading
import time
from functools import cache

from ray.util import metrics

LATENCY_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
# Ray's metrics agent drops a gauge's value 2 report intervals (2 x 10 s by default) after
# the process last set it; held gauges are set again more often than that.
REFRESH_SECONDS = 5.0
_held: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[HeldGauge, float, dict[str, str]]] = {}
_held_lock = threading.Lock()


class HeldGauge(metrics.Gauge):
    """A gauge whose values stay exported while the process lives. A plain Ray gauge set
    once disappears from the export after about 20 s (measured on Ray 2.60), so a value that
    holds still (a stage start time, the shards of a stalled round) would vanish and the
    alerts on it would never fire; a daemon thread sets every held value again."""

    def set(self, value: float | None, tags: dict[str, str] | None = None) -> None:
        if value is None:
            return
        tags = tags or {}
        with _held_lock:  # never behind the refresher: it could set an older value last
            super().set(value, tags)
            _held[(id(self), tuple(sorted(tags.items())))] = (self, value, tags)
        _refresher()


@cache
def _refresher() -> threading.Thread:
    def refresh() -> None:
        while True:
            time.sleep(REFRESH_SECONDS)
            with _held_lock:
                for gauge, value, tags in _held.values():
                    metrics.Gauge.set(gauge, value, tags)

    thread = threading.Thread(target=refresh, name="gestalt-gauges", daemon=True)
    thread.start()
    return thread


@cache
def samples_scored() -> metrics.Counter:
    return metrics.Counter(
        "gestalt_samples_scored", "Pool samples scored, per deployment.", tag_keys=("deployment",)
    )


@cache
def scoring_latency() -> metrics.Histogram:
    return metrics.Histogram(
        "gestalt_scoring_batch_seconds",
        "Time to score one @serve.batch batch, per deployment.",
        boundaries=LATENCY_BOUNDARIES,
        tag_keys=("deployment",),
    )


@cache
def shards_in_flight() -> HeldGauge:
    return HeldGauge("gestalt_shards_in_flight", "Pool shards waiting to be scored.")


@cache
def ranking_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "gestalt_ranking_seconds",
        "Time to rank a whole pool for every strategy.",
        boundaries=[0.1, 0.5, 1, 5, 10, 30, 60, 300, 900],
    )


@cache
def rounds_by_state() -> HeldGauge:
    return HeldGauge("gestalt_rounds", "Rounds known to the ranking actor, per state.",
                     tag_keys=("state",))  # fmt: skip


@cache
def grpc_requests() -> metrics.Counter:
    return metrics.Counter(
        "gestalt_grpc_requests",
        "gRPC requests by method and status code.",
        tag_keys=("method", "code"),
    )


@cache
def loop_round() -> HeldGauge:
    return HeldGauge("gestalt_loop_round", "The round each AL loop is in.", tag_keys=("loop",))


@cache
def loop_labels_acquired() -> metrics.Counter:
    return metrics.Counter(
        "gestalt_loop_labels_acquired",
        "Labels of queried samples that arrived, per loop.",
        tag_keys=("loop",),
    )


@cache
def loop_stage_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "gestalt_loop_stage_seconds",
        "Time a loop round spent in a stage (waiting for labels included).",
        boundaries=[1, 10, 30, 60, 300, 900, 3600, 14400, 86400],
        tag_keys=("stage",),
    )


@cache
def loop_macro_auc() -> HeldGauge:
    return HeldGauge(
        "gestalt_loop_macro_auc",
        "Macro ROC-AUC of each loop's latest model, per split (val, test).",
        tag_keys=("loop", "split"),
    )


@cache
def loop_stage_started() -> HeldGauge:
    # A stage that hangs never ends, so the histogram above never sees it; its start time does.
    return HeldGauge(
        "gestalt_loop_stage_start_timestamp_seconds",
        "Unix time each loop's current stage started; 0 while the loop is in another stage.",
        tag_keys=("loop", "stage"),
    )


@cache
def store_unavailable() -> HeldGauge:
    # A time, not a counter: a Ray counter appears with its first failure, which rate() misses.
    return HeldGauge(
        "gestalt_store_last_unavailable_timestamp_seconds",
        "Unix time a component's object store call last failed as unavailable (after retries).",
        tag_keys=("component",),
    )
