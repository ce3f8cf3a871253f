"""Input checks shared by the ranking functions: every failure names the argument and the fault."""

from __future__ import annotations

import numpy as np


def check_latents(latents: object, name: str) -> np.ndarray:
    """Accept any array-like ``[N, K, D]`` of finite reals with N >= 1, K >= 2, D >= 1."""
    try:
        arr = np.asarray(latents)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array shaped [N, K, D]: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"{name} must be shaped [N, K, D] (3 dimensions), got shape {arr.shape}")
    n, k, d = arr.shape
    if n < 1:
        raise ValueError(f"{name} is empty: it has no samples (shape {arr.shape})")
    if k < 2:
        raise ValueError(f"{name} has K={k} classes; a class graph needs K >= 2 nodes")
    if d < 1:
        raise ValueError(f"{name} has latent dimension D={d}; need D >= 1")
    if not np.isfinite(arr).all():
        bad = np.unique(np.argwhere(~np.isfinite(arr))[:, 0])
        raise ValueError(
            f"{name} contains NaN or inf in {bad.size} sample(s), first at index {int(bad[0])}"
        )
    return arr


def check_edge_weights(edges: object) -> np.ndarray:
    """Accept ``[N, K, K]`` float cosine similarities with a zero diagonal (as ``edge_weights``)."""
    arr = np.asarray(edges)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"edge weights must be shaped [N, K, K], got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 2:
        raise ValueError(f"edge weights need N >= 1 samples and K >= 2 classes, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"edge weights must be floating point, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("edge weights contain NaN or inf")
    if np.any(np.diagonal(arr, axis1=1, axis2=2)):
        raise ValueError(
            "edge weights must have a zero diagonal (no self-loops), as edge_weights()"
        )
    return arr


def check_same_graph(pool: np.ndarray, other: np.ndarray, name: str) -> None:
    """Latents ranked together must describe the same K classes in the same latent space."""
    if pool.shape[1:] != other.shape[1:]:
        raise ValueError(
            f"{name} has [K, D] = {list(other.shape[1:])} but the pool has "
            f"{list(pool.shape[1:])}: all latents must come from the same model and classes"
        )
