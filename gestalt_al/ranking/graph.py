"""Per-sample class graphs (paper Eq. 1): K saliency latents -> K x K cosine edge weights."""

from __future__ import annotations

import numpy as np

from gestalt_al.ranking.validation import check_latents

# Similarities and their aggregates are compared at this many decimals (see ``snap``).
DECIMALS = 12
# Chunking bounds the float64 working copy of the latents (chunk x K x D) whatever N is.
DEFAULT_CHUNK = 32_768


def edge_weights(
    latents: object, chunk_size: int = DEFAULT_CHUNK, name: str = "latents"
) -> np.ndarray:
    """Cosine similarity between every pair of class latents of each sample.

    Returns float64 ``[N, K, K]``, symmetric with a zero diagonal: a class graph has no
    self-loops, which lets every aggregation sum whole rows. A zero-norm latent (a saliency
    map with no relevance at all) has similarity 0 to every other node instead of NaN.
    """
    return cosine_graph(check_latents(latents, name), chunk_size)


def cosine_graph(lat: np.ndarray, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """``edge_weights`` for latents that were already validated."""
    n, k, _ = lat.shape
    out = np.empty((n, k, k), dtype=np.float64)
    diagonal = np.arange(k)
    for start in range(0, n, chunk_size):
        z = lat[start : start + chunk_size].astype(np.float64)
        with np.errstate(over="ignore", under="ignore"):  # detected and redone below
            gram = np.matmul(z, z.transpose(0, 2, 1), out=out[start : start + chunk_size])
        squared = np.diagonal(gram, axis1=1, axis2=2).copy()
        if not _norms_in_safe_range(z, squared):
            # Rescale each latent by a power of two (exact; cosine ignores it) so the
            # products below neither overflow nor underflow, then redo the Gram matrix.
            _, exponent = np.frexp(np.abs(z).max(axis=2, keepdims=True))
            z = np.ldexp(z, -exponent)
            gram = np.matmul(z, z.transpose(0, 2, 1), out=gram)
            squared = np.diagonal(gram, axis1=1, axis2=2).copy()
        # One square root of the product of squared norms keeps exact cases exact
        # (parallel, orthogonal and integer latents); a zero latent gets similarity 0.
        scale = np.sqrt(squared[:, :, None] * squared[:, None, :])
        np.divide(gram, scale, out=gram, where=scale > 0)
        np.clip(gram, -1.0, 1.0, out=gram)
        gram[:, diagonal, diagonal] = 0.0
        snap(gram)
    return out


def _norms_in_safe_range(z: np.ndarray, squared: np.ndarray) -> bool:
    """Whether products of two squared norms stay normal floats (the common case: no rescale).

    A zero squared norm is only safe for a latent that really is zero, not one that underflowed.
    """
    zero = squared == 0
    in_range = (squared > 2.0**-500) & (squared < 2.0**500)
    return bool(np.all(zero | in_range)) and not (zero.any() and np.any(z[zero]))


def node_weights(edges: np.ndarray) -> np.ndarray:
    """Eq. 2: ``w_k = sum_{j != k} w_kj`` -> ``[N, K]`` (the diagonal is zero by contract)."""
    return snap(edges @ np.ones(edges.shape[2]))


def snap(values: np.ndarray) -> np.ndarray:
    """Round in place to ``DECIMALS`` places, so values equal in exact arithmetic tie.

    Float64 results carry rounding noise around 1e-16 that depends on summation order, FMA and
    BLAS kernels (so on the machine: CPU vs GPU workers). Ranking raw values would let that
    noise order exact ties at random. 1e-12 is far below any difference between two
    similarities that means something, and far above the noise.
    """
    return np.round(values, DECIMALS, out=values)


def upper_edges(edges: np.ndarray) -> np.ndarray:
    """The K(K-1)/2 undirected edges of each graph, row-major upper triangle -> ``[N, E]``."""
    rows, cols = np.triu_indices(edges.shape[1], k=1)
    return edges[:, rows, cols]
