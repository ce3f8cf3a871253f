"""Per-shard scoring results of one round in the object store.

Under ``pools/<pool>/rounds/<round>/<model version>/shards/<shard>/``: ``latents.faiss`` (an
``IndexIDMap2`` over the flattened ``[K * D]`` latents, ids = pool indices, so search results
name stable samples) and ``weights.npz`` (pool indices, node weights ``[n, K]``, upper-triangle
edge weights ``[n, K(K-1)/2]``, predictive entropy, sampler scores). ``weights.npz`` is written
last: its presence marks the shard done, and rewriting a shard replaces both objects whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from gestalt_al.ranking import node_weights, upper_edges
from gestalt_al.ranking.graph import cosine_graph
from gestalt_al.ranking.validation import check_latents
from gestalt_al.service.arrays import load_npz, npz_bytes
from gestalt_al.storage import ObjectStore, join_key

WEIGHTS = "weights.npz"
INDEX = "latents.faiss"


@dataclass(frozen=True)
class ShardScores:
    """What the deployments computed for one pool shard."""

    indices: np.ndarray  # [n] int64 pool indices
    latents: np.ndarray  # [n, K, D] float32
    uncertainty: np.ndarray  # [n] predictive entropy of the task model
    sampler_scores: np.ndarray | None  # [n] discriminator scores, None without a sampler


@dataclass(frozen=True)
class ShardWeights:
    """What ranking needs of a shard (no latents, no images)."""

    indices: np.ndarray
    node: np.ndarray  # [n, K] float64
    edges: np.ndarray  # [n, K(K-1)/2] float64
    uncertainty: np.ndarray
    sampler_scores: np.ndarray | None

    def take(self, mask: np.ndarray) -> ShardWeights:
        sampler = None if self.sampler_scores is None else self.sampler_scores[mask]
        return ShardWeights(
            self.indices[mask], self.node[mask], self.edges[mask], self.uncertainty[mask], sampler
        )

    def full_edges(self) -> np.ndarray:
        """``[n, K, K]`` symmetric with a zero diagonal, as ``edge_weights`` returns."""
        n, k = self.node.shape
        full = np.zeros((n, k, k), dtype=np.float64)
        rows, cols = np.triu_indices(k, k=1)
        full[:, rows, cols] = self.edges
        full[:, cols, rows] = self.edges
        return full


def latent_index(indices: np.ndarray, latents: np.ndarray) -> faiss.IndexIDMap2:
    flat = np.ascontiguousarray(latents.reshape(len(latents), -1), dtype=np.float32)
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(flat.shape[1]))
    index.add_with_ids(flat, np.asarray(indices, dtype=np.int64))
    return index


def index_latents(index: faiss.IndexIDMap2, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, latents ``[n, K, D]``) read back exactly from a shard's index."""
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    flat = index.index.reconstruct_n(0, index.ntotal)
    return ids, flat.reshape(len(ids), num_classes, -1)


class RoundResults:
    """The result objects of one round (one pool, one model version)."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def write(self, shard: str, scores: ShardScores) -> None:
        latents = check_latents(scores.latents, f"latents of shard {shard}")
        graphs = cosine_graph(latents)
        index = latent_index(scores.indices, latents)
        self.store.put(self._key(shard, INDEX), faiss.serialize_index(index).tobytes())
        arrays = {
            "indices": np.asarray(scores.indices, dtype=np.int64),
            "node": node_weights(graphs),
            "edges": upper_edges(graphs),
            "uncertainty": np.asarray(scores.uncertainty, dtype=np.float64),
        }
        if scores.sampler_scores is not None:
            arrays["sampler_scores"] = np.asarray(scores.sampler_scores, dtype=np.float64)
        self.store.put(self._key(shard, WEIGHTS), npz_bytes(arrays))

    def done(self) -> set[str]:
        """Shards whose results are complete."""
        suffix = f"/{WEIGHTS}"
        return {
            key.removeprefix(f"{self.prefix}/shards/").removesuffix(suffix)
            for key in self.store.list(join_key(self.prefix, "shards"))
            if key.endswith(suffix)
        }

    def weights(self, shard: str) -> ShardWeights:
        arrays = load_npz(self.store.get(self._key(shard, WEIGHTS)))
        return ShardWeights(
            arrays["indices"], arrays["node"], arrays["edges"], arrays["uncertainty"],
            arrays.get("sampler_scores"),
        )  # fmt: skip

    def index(self, shard: str) -> faiss.IndexIDMap2:
        data = np.frombuffer(self.store.get(self._key(shard, INDEX)), dtype=np.uint8)
        index = faiss.deserialize_index(data)
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{self._key(shard, INDEX)}: not an id-mapped FAISS index")
        return index

    def iter_weights(self, shards: list[str]) -> Iterator[ShardWeights]:
        for shard in shards:
            yield self.weights(shard)

    def _key(self, shard: str, name: str) -> str:
        return join_key(self.prefix, "shards", shard, name)
