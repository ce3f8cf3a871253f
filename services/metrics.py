"""The service's Prometheus metrics (exported through Ray's metrics agent with a ``ray_``
prefix). Created on first use in each process, since Ray metrics belong to the process."""

from __future__ import annotations

from functools import cache

from ray.util import metrics

LATENCY_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


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
def shards_in_flight() -> metrics.Gauge:
    return metrics.Gauge("gestalt_shards_in_flight", "Pool shards waiting to be scored.")


@cache
def ranking_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "gestalt_ranking_seconds",
        "Time to rank a whole pool for every strategy.",
        boundaries=[0.1, 0.5, 1, 5, 10, 30, 60, 300, 900],
    )


@cache
def rounds_by_state() -> metrics.Gauge:
    return metrics.Gauge("gestalt_rounds", "Rounds known to the ranking actor, per state.",
                         tag_keys=("state",))  # fmt: skip


@cache
def grpc_requests() -> metrics.Counter:
    return metrics.Counter(
        "gestalt_grpc_requests",
        "gRPC requests by method and status code.",
        tag_keys=("method", "code"),
    )


@cache
def loop_round() -> metrics.Gauge:
    return metrics.Gauge("gestalt_loop_round", "The round each AL loop is in.", tag_keys=("loop",))


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
def loop_macro_auc() -> metrics.Gauge:
    return metrics.Gauge(
        "gestalt_loop_macro_auc",
        "Macro ROC-AUC of each loop's latest model, per split (val, test).",
        tag_keys=("loop", "split"),
    )
