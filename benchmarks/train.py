"""Ray Train scaling benchmark: training samples/s of the task model and of the M-VAAL sampler
(VAE + discriminator) with 1 and with 2 Ray Train workers, measured in the same run.

Throughput is from the workers' own clock around the training part of each epoch (no
validation, no Ray start-up), median over the epochs after the first. Each worker takes a
shard and its own batch of ``--batch`` (data parallel: the global batch grows with workers),
and gets one CPU (Ray sets its torch threads to 1), or one GPU with ``--use-gpu``. Prints a
table and writes ``benchmarks/results/train.json``.

    .venv/bin/python benchmarks/train.py [--workers 1 2] [--epochs 3] [--use-gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ray
import torch

from gestalt_al.data import bundled_lgg_path, bundled_nih_path, load_dataset, load_paired_npz
from gestalt_al.distributed.epochs import RayRun
from gestalt_al.distributed.mvaal import train_mvaal_ray
from gestalt_al.distributed.task_model import train_task_model_ray
from gestalt_al.models import ModelConfig
from gestalt_al.mvaal import MVAALConfig
from gestalt_al.training import TrainConfig

RESULTS = Path(__file__).parent / "results" / "train.json"
IMAGE_SIZE = 64
History = list[dict[str, float]]


def task_model_job(epochs: int, batch: int) -> tuple[str, int, Callable[[RayRun], History]]:
    train = load_dataset(bundled_nih_path(), "train", "images_64")
    val = load_dataset(bundled_nih_path(), "val", "images_64")
    assert train.labels is not None  # the bundled set is labeled
    assert val.labels is not None
    train_labels, val_labels = train.labels, val.labels
    config = ModelConfig("resnet18", 14, image_size=IMAGE_SIZE)
    settings = TrainConfig(max_epochs=epochs, patience=epochs, batch_size=batch)
    description = f"task model: ResNet-18, {len(train)} NIH images at {IMAGE_SIZE} px"

    def run(ray_run: RayRun) -> History:
        result = train_task_model_ray(
            config, train.images, train_labels, val.images, val_labels, settings, ray_run
        )
        return result.history

    return description, len(train), run


def mvaal_job(epochs: int, batch: int) -> tuple[str, int, Callable[[RayRun], History]]:
    data = load_paired_npz(bundled_lgg_path(), "train", "t1post", "images")
    order = np.random.default_rng(0).permutation(len(data))
    labeled, unlabeled = data.subset(order[:40]), data.subset(order[40:])
    config = MVAALConfig(image_size=IMAGE_SIZE, width=32, batch_size=batch)
    description = (
        f"M-VAAL: width 32, latent 64, {len(unlabeled)} unlabeled + 40 labeled LGG slices "
        f"at {IMAGE_SIZE} px"
    )

    def run(ray_run: RayRun) -> History:
        return train_mvaal_ray(config, labeled, unlabeled, epochs, ray_run).history

    return description, len(unlabeled), run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="per worker")
    parser.add_argument("--use-gpu", action="store_true")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(include_dashboard=False, log_to_driver=False)
    device = torch.cuda.get_device_name(0) if args.use_gpu else platform.machine() + " CPU"
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for name, job in (("task_model", task_model_job), ("mvaal", mvaal_job)):
            description, samples, run = job(args.epochs, args.batch)
            baseline = None
            for workers in args.workers:
                history = run(RayRun(f"{name}-{workers}", storage, workers, args.use_gpu))
                seconds = statistics.median(r["train_seconds"] for r in history[1:])
                throughput = samples / seconds
                baseline = baseline or throughput
                rows.append({
                    "job": name, "description": description, "workers": workers,
                    "samples_per_s": round(throughput, 1),
                    "ratio_vs_first": round(throughput / baseline, 2),
                    "epoch_train_seconds": round(seconds, 2),
                })  # fmt: skip
    ray.shutdown()
    print(f"\n{device}, {os.cpu_count()} CPUs, batch {args.batch} per worker")
    print(f"{'job':<11} {'workers':>7} {'samples/s':>10} {'vs ' + str(args.workers[0]):>7}")
    for row in rows:
        print(f"{row['job']:<11} {row['workers']:>7} {row['samples_per_s']:>10.1f} "
              f"{row['ratio_vs_first']:>6.2f}x")  # fmt: skip
    RESULTS.parent.mkdir(exist_ok=True)
    summary = {"device": device, "cpus": os.cpu_count(), "batch_per_worker": args.batch}
    RESULTS.write_text(json.dumps(summary | {"rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
