"""Simulated AL: an oracle answers queries with a data set's ground truth, so strategies can be
compared by learning curves (same initial set, model, recipe and seeds; only the selection
differs)."""

from gestalt_al.simulation.datasets import DATASETS, SimulationData, load_simulation_data
from gestalt_al.simulation.loop import CurvePoint, SimulationSettings, simulate

__all__ = [
    "DATASETS",
    "CurvePoint",
    "SimulationData",
    "SimulationSettings",
    "load_simulation_data",
    "simulate",
]
