"""``gestalt-al simulate``: run the learning-curve grid on Ray, then print and save the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import ray

from gestalt_al.simulation.grid import GridSettings, cluster_total, run_grid
from gestalt_al.simulation.report import as_records, dataset_report, format_table


def simulate_and_report(
    grid: GridSettings,
    datasets: tuple[str, ...],
    strategies: tuple[str, ...],
    figure_dir: str | Path | None,
    results_file: str | Path,
) -> dict[str, object]:
    """Missing runs first (on the running Ray cluster, or a local one), then per data set a
    markdown table, a PNG of the curves and every number in ``results_file``."""
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    ran = run_grid(grid, datasets, strategies)
    results: dict[str, object] = {
        "grid": grid.__dict__, "runs_this_call": ran,
        "wall_seconds_this_call": round(time.perf_counter() - started, 1),
        "cluster_cpus": cluster_total("CPU"), "datasets": {},
    }  # fmt: skip
    tables = []
    for dataset in datasets:
        summaries = dataset_report(grid.out_dir, dataset, figure_dir)
        results["datasets"][dataset] = as_records(summaries)  # type: ignore[index]
        tables.append(format_table(dataset, summaries))
    print("\n\n".join(tables))
    Path(results_file).parent.mkdir(parents=True, exist_ok=True)
    Path(results_file).write_text(json.dumps(results, indent=1))
    print(f"\n{ran} runs in {results['wall_seconds_this_call']} s; numbers in {results_file}")
    return results
