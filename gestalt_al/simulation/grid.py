"""The learning-curve grid (data sets x strategies x seeds) as Ray tasks, one run per task.

Each finished run is written as JSON at once, so an interrupted grid resumes where it stopped
and a bigger cluster (or GPUs) runs the same code with more tasks in flight.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from gestalt_al.simulation.datasets import DATASETS, load_simulation_data
from gestalt_al.simulation.loop import CurvePoint, SimulationSettings, simulate
from gestalt_al.strategies import STRATEGY_NAMES
from gestalt_al.strategies.catalogue import MULTI_CLASS_ONLY, NEEDS_AUX


@dataclass(frozen=True)
class Protocol:
    """Per data set: labeled sizes and the learning rate chosen on its validation split."""

    initial_labeled: int
    budget: int
    learning_rate: float
    pool_size: int | None = None
    val_size: int | None = 150


PROTOCOLS: dict[str, Protocol] = {
    "nih": Protocol(100, 50, 1e-3),
    "pneumonia": Protocol(10, 10, 1e-4, pool_size=600),
    "breast": Protocol(20, 20, 1e-4),
    "lgg": Protocol(20, 20, 3e-3, pool_size=600),
}


@dataclass(frozen=True)
class GridSettings:
    data_dir: str
    out_dir: str
    rounds: int = 4
    seeds: int = 5
    device: str = "cpu"
    sampler_epochs: int = 5
    max_epochs: int = 15


def applicable(dataset: str, strategy: str) -> bool:
    """Margin and least confidence are multi-class measures; M-VAAL needs a second modality."""
    if strategy in MULTI_CLASS_ONLY and dataset == "nih":
        return False
    return not (strategy in NEEDS_AUX and DATASETS[dataset].aux_key is None)


def run_path(out_dir: str | Path, dataset: str, strategy: str, seed: int) -> Path:
    return Path(out_dir) / "runs" / dataset / strategy / f"seed{seed}.json"


def settings_for(dataset: str, grid: GridSettings) -> SimulationSettings:
    protocol = PROTOCOLS[dataset]
    base = SimulationSettings()
    return SimulationSettings(
        protocol.initial_labeled, protocol.budget, grid.rounds, base.arch,
        replace(base.train, learning_rate=protocol.learning_rate, max_epochs=grid.max_epochs,
                device=grid.device),
        grid.sampler_epochs,
    )  # fmt: skip


@ray.remote(num_cpus=1)
def _run(dataset: str, strategy: str, seed: int, grid: GridSettings) -> str:
    torch.set_num_threads(1)  # one task per core: threads would only fight each other
    protocol = PROTOCOLS[dataset]
    data = load_simulation_data(dataset, grid.data_dir, protocol.pool_size, protocol.val_size)
    curve = simulate(data, strategy, seed, settings_for(dataset, grid))
    path = run_path(grid.out_dir, dataset, strategy, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps([asdict(point) for point in curve]))
    staged.rename(path)
    return str(path)


def run_grid(
    grid: GridSettings, datasets: tuple[str, ...], strategies: tuple[str, ...] = STRATEGY_NAMES
) -> int:
    """Runs every missing (data set, strategy, seed) and returns how many ran."""
    for dataset in datasets:
        if dataset not in PROTOCOLS:
            raise ValueError(f"unknown data set {dataset!r}; choose from {', '.join(PROTOCOLS)}")
    for strategy in strategies:
        if strategy not in STRATEGY_NAMES:
            raise ValueError(
                f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGY_NAMES)}"
            )
    todo = [
        (d, s, seed)
        for d in datasets
        for seed in range(grid.seeds)
        for s in strategies
        if applicable(d, s) and not run_path(grid.out_dir, d, s, seed).exists()
    ]
    # Runs are small: every CPU's task shares the GPUs, instead of one run per GPU.
    gpus = cluster_total("GPU") / max(cluster_total("CPU"), 1.0)
    task = _run.options(num_gpus=gpus) if grid.device.startswith("cuda") else _run
    pending = [task.remote(d, s, seed, grid) for d, s, seed in todo]
    with tqdm(total=len(pending), desc="simulated runs", unit="run") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
            bar.update(len(done))
    return len(todo)


def cluster_total(resource: str) -> float:
    return float(ray.cluster_resources().get(resource, 0.0))  # type: ignore[no-untyped-call]


def load_runs(out_dir: str | Path, dataset: str) -> dict[str, list[list[CurvePoint]]]:
    """Every finished run of one data set, by strategy, in seed order."""
    found: dict[str, list[list[CurvePoint]]] = {}
    root = Path(out_dir) / "runs" / dataset
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        seeds = sorted(folder.glob("seed*.json"), key=lambda p: int(p.stem[4:]))
        found[folder.name] = [
            [CurvePoint(**point) for point in json.loads(path.read_text())] for path in seeds
        ]
    return found
