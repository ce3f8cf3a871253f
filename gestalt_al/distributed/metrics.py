"""Per-epoch training numbers on Ray's metrics export, which Prometheus scrapes from every
node (``ray_gestalt_train_*``). Tagged by job (task_model, mvaal, vaal) and run name."""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

EPOCH_SECONDS_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]


class TrainingMetrics:
    """Created inside a Ray worker (the metrics are registered with that process)."""

    def __init__(self, job: str, run: str) -> None:
        self.tags = {"job": job, "run": run}
        self.values = Gauge(
            "gestalt_train_epoch_value",
            description="Last epoch's value of each training metric (loss, validation AUC)",
            tag_keys=("job", "run", "metric"),
        )
        self.seconds = Histogram(
            "gestalt_train_epoch_seconds",
            description="Wall time of one training epoch, validation included",
            boundaries=EPOCH_SECONDS_BUCKETS,
            tag_keys=("job", "run"),
        )
        self.epochs = Counter(
            "gestalt_train_epochs_total",
            description="Training epochs finished (resumed epochs count once more)",
            tag_keys=("job", "run"),
        )

    def record(self, values: dict[str, float], seconds: float) -> None:
        for name, value in values.items():
            self.values.set(value, tags=self.tags | {"metric": name})
        self.seconds.observe(seconds, tags=self.tags)
        self.epochs.inc(tags=self.tags)
