"""Round records: what a round is, how far it got, and its final scores, in the object store.

A round id is ``<pool>.<12 hex>``, a digest of the pool, both model versions and the labeled
set, so asking for the same round twice finds the same record (and resumes it).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from gestalt_al.service.arrays import load_npy, load_npz, npy_bytes, npz_bytes
from gestalt_al.service.errors import InvalidArgumentError, NotFoundError
from gestalt_al.service.pool import check_pool_id
from gestalt_al.service.shard_results import RoundResults
from gestalt_al.service.strategies import RoundScores
from gestalt_al.storage import ObjectNotFoundError, ObjectStore, join_key

# \Z, not $: "$" also matches before a trailing newline.
ROUND_ID = re.compile(r"^([a-z0-9][a-z0-9_-]{0,62})\.([0-9a-f]{12})\Z")
STATES = ("scoring", "ranking", "done", "failed")


@dataclass(frozen=True)
class RoundRecord:
    round_id: str
    pool_id: str
    model_id: str
    sampler_model_id: str  # "" without a sampler
    shards_total: int
    num_labeled: int
    state: str = "scoring"
    shards_done: int = 0
    num_candidates: int = 0
    strategies: tuple[str, ...] = ()
    message: str = ""
    unavailable: bool = False  # failed because storage or Ray could not be reached
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage

    def update(self, **changes: object) -> RoundRecord:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


def round_id_for(pool_id: str, model_id: str, sampler_model_id: str, labeled: np.ndarray) -> str:
    digest = hashlib.sha256(f"{pool_id}\n{model_id}\n{sampler_model_id}\n".encode())
    digest.update(np.ascontiguousarray(labeled, dtype=np.int64).tobytes())
    return f"{check_pool_id(pool_id)}.{digest.hexdigest()[:12]}"


def parse_round_id(round_id: str) -> tuple[str, str]:
    match = ROUND_ID.match(round_id)
    if match is None:
        raise InvalidArgumentError(
            f"{round_id!r} is not a round id (like 'nih.1a2b3c4d5e6f', as StartRound returns)"
        )
    return match.group(1), match.group(2)


class RoundBook:
    """Records, labeled sets, per-shard results and final scores of every round."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def prefix(self, round_id: str) -> str:
        pool_id, digest = parse_round_id(round_id)
        return join_key("pools", pool_id, "rounds", digest)

    def results(self, record: RoundRecord) -> RoundResults:
        return RoundResults(self.store, join_key(self.prefix(record.round_id), record.model_id))

    def save(self, record: RoundRecord) -> None:
        data = json.dumps(asdict(record), indent=1).encode()
        self.store.put(join_key(self.prefix(record.round_id), "round.json"), data)

    def load(self, round_id: str) -> RoundRecord:
        try:
            raw = json.loads(self.store.get(join_key(self.prefix(round_id), "round.json")))
        except ObjectNotFoundError as exc:
            raise NotFoundError(f"no round {round_id!r}; StartRound returns round ids") from exc
        return RoundRecord(**{**raw, "strategies": tuple(raw["strategies"])})

    def exists(self, round_id: str) -> bool:
        return self.store.exists(join_key(self.prefix(round_id), "round.json"))

    def unfinished(self) -> list[RoundRecord]:
        """Rounds that were scoring or ranking when their process stopped."""
        records = []
        for key in self.store.list("pools"):
            parts = key.split("/")
            if len(parts) == 5 and parts[2] == "rounds" and parts[4] == "round.json":
                record = self.load(f"{parts[1]}.{parts[3]}")
                if not record.finished:
                    records.append(record)
        return records

    def save_labeled(self, round_id: str, labeled: np.ndarray) -> None:
        self.store.put(join_key(self.prefix(round_id), "labeled.npy"), npy_bytes(labeled))

    def labeled(self, round_id: str) -> np.ndarray:
        return load_npy(self.store.get(join_key(self.prefix(round_id), "labeled.npy")))

    def save_scores(self, round_id: str, scores: RoundScores) -> None:
        data = npz_bytes(scores.to_arrays())
        self.store.put(join_key(self.prefix(round_id), "scores.npz"), data)

    def scores(self, round_id: str) -> RoundScores:
        data = self.store.get(join_key(self.prefix(round_id), "scores.npz"))
        return RoundScores.from_arrays(load_npz(data))
