"""Learning-curve benchmark: does a strategy reach random's AUC with fewer labels?

Every strategy on the NIH sample, PneumoniaMNIST, BreastMNIST and LGG slices (``--data-dir``,
default ``../shared/data``), 5 seeds, 4 query rounds, a small CNN retrained from scratch each
round; random is the baseline measured in the same run (ratio column). Runs are Ray tasks, one
per (data set, strategy, seed), stored as they finish under ``benchmarks/results/al_curves/``
so the grid resumes; curves go to ``docs/al_curves/<data set>.png``, the numbers to
``benchmarks/results/al_curves.json``.

    .venv/bin/python benchmarks/al_curves.py [--datasets breast pneumonia nih lgg] [--seeds 5]
        [--device cuda]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gestalt_al.simulation.command import simulate_and_report
from gestalt_al.simulation.grid import PROTOCOLS, GridSettings
from gestalt_al.strategies import STRATEGY_NAMES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(PROTOCOLS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS / "al_curves"))
    args = parser.parse_args()
    grid = GridSettings(args.data_dir, args.out, args.rounds, args.seeds, args.device)
    simulate_and_report(grid, tuple(args.datasets), STRATEGY_NAMES, ROOT / "docs" / "al_curves",
                        RESULTS / "al_curves.json")  # fmt: skip


if __name__ == "__main__":
    main()
