"""A continuous loop's state in the object store, so a restarted coordinator continues it.

``loops/<loop>/loop.json`` holds the config, the loop's state and its initial random query;
``loops/<loop>/rounds/<r>/`` holds round r: ``round.json`` (stage, model versions, service
round, selection, metrics; rewritten whole at every stage), ``labeled.json`` (the labeled set
the round trained on, written once) and the exported query list. Every object is replaced
whole, so a reader sees one stage or the next, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from gestalt_al.service.errors import InvalidArgumentError, NotFoundError
from gestalt_al.service.loop_config import LoopConfig
from gestalt_al.service.pool import POOL_ID
from gestalt_al.storage import ObjectNotFoundError, ObjectStore, join_key

LOOP_STATES = ("initial_labels", "running", "finished", "failed")
STAGES = ("training", "scoring", "awaiting_labels", "done")


@dataclass(frozen=True)
class Query:
    """One queried sample: its pool index and id, its rank (1 = first) and score."""

    index: int
    sample_id: str
    rank: int
    score: float


@dataclass(frozen=True)
class LoopRecord:
    config: LoopConfig
    state: str = "initial_labels"
    round: int = 0  # the round in progress (or the last one, once finished)
    initial: tuple[Query, ...] = ()  # the seeded random set queried before round 0
    stop_reason: str = ""
    message: str = ""  # why the loop failed
    unavailable: bool = False  # failed because storage or Ray could not be reached

    @property
    def loop_id(self) -> str:
        return self.config.loop_id

    @property
    def active(self) -> bool:
        return self.state in ("initial_labels", "running")

    def update(self, **changes: object) -> LoopRecord:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LoopRound:
    """Round r: train on the labeled set -> score and rank the pool -> query -> labels.

    A round with a ``stop_reason`` (the stopping rule held when it began) is the loop's last:
    it only trains and evaluates. ``model_round`` is the registry round of its models."""

    round: int
    num_labeled: int
    stop_reason: str = ""
    stage: str = "training"
    model_round: int = -1
    model_id: str = ""
    sampler_model_id: str = ""
    service_round_id: str = ""
    queries: tuple[Query, ...] = ()
    num_query_labeled: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return bool(self.stop_reason)

    def update(self, **changes: object) -> LoopRound:
        return replace(self, **changes)  # type: ignore[arg-type]


class LoopBook:
    """Loop records, round records and labeled sets of every loop in one store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @staticmethod
    def prefix(loop_id: str) -> str:
        if not POOL_ID.match(loop_id):
            raise InvalidArgumentError(
                f"{loop_id!r} is not a loop id (like 'nih-loop'; {POOL_ID.pattern})"
            )
        return join_key("loops", loop_id)

    def round_prefix(self, loop_id: str, number: int) -> str:
        return join_key(self.prefix(loop_id), "rounds", f"{number:04d}")

    def query_prefix(self, loop_id: str, number: int | None) -> str:
        """Where round ``number``'s query list is exported (None: the initial set's)."""
        if number is None:
            return join_key(self.prefix(loop_id), "initial")
        return self.round_prefix(loop_id, number)

    def query_uri(self, loop_id: str, number: int | None) -> str:
        return self.uri(join_key(self.query_prefix(loop_id, number), "query.json"))

    def uri(self, key: str) -> str:
        """Where an object of this store lives, for people and labeling tools."""
        return f"{self.store.description.rstrip('/')}/{key}"

    # --- loops --------------------------------------------------------------------------
    def save(self, record: LoopRecord) -> None:
        self._put(join_key(self.prefix(record.loop_id), "loop.json"), asdict(record))

    def exists(self, loop_id: str) -> bool:
        return self.store.exists(join_key(self.prefix(loop_id), "loop.json"))

    def load(self, loop_id: str) -> LoopRecord:
        raw = self._get(join_key(self.prefix(loop_id), "loop.json"), f"no loop {loop_id!r}")
        return LoopRecord(
            **{
                **raw,
                "config": LoopConfig.from_dict(raw["config"]),
                "initial": tuple(Query(**q) for q in raw["initial"]),
            }
        )

    def active(self) -> list[LoopRecord]:
        """Loops that were running when their coordinator stopped."""
        found = []
        for key in self.store.list("loops"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == "loop.json":
                record = self.load(parts[1])
                if record.active:
                    found.append(record)
        return found

    # --- rounds -------------------------------------------------------------------------
    def save_round(self, loop_id: str, state: LoopRound) -> None:
        self._put(join_key(self.round_prefix(loop_id, state.round), "round.json"), asdict(state))

    def round(self, loop_id: str, number: int) -> LoopRound | None:
        key = join_key(self.round_prefix(loop_id, number), "round.json")
        if not self.store.exists(key):
            return None
        raw = self._get(key, f"no round {number} in loop {loop_id!r}")
        return LoopRound(**{**raw, "queries": tuple(Query(**q) for q in raw["queries"])})

    def rounds(self, loop_id: str) -> list[LoopRound]:
        found = []
        for key in self.store.list(join_key(self.prefix(loop_id), "rounds")):
            parts = key.split("/")
            if len(parts) == 5 and parts[4] == "round.json":
                state = self.round(loop_id, int(parts[3]))
                if state is not None:
                    found.append(state)
        return sorted(found, key=lambda state: state.round)

    def save_labeled(self, loop_id: str, number: int, indices: np.ndarray, ids: np.ndarray) -> None:
        value = {"indices": [int(i) for i in indices], "ids": [str(s) for s in ids]}
        self._put(join_key(self.round_prefix(loop_id, number), "labeled.json"), value)

    def labeled(self, loop_id: str, number: int) -> np.ndarray | None:
        """The pool indices round ``number`` trained on, None before they were recorded."""
        key = join_key(self.round_prefix(loop_id, number), "labeled.json")
        if not self.store.exists(key):
            return None
        raw = self._get(key, f"no labeled set for round {number} of loop {loop_id!r}")
        return np.array(raw["indices"], dtype=np.int64)

    def _put(self, key: str, value: object) -> None:
        self.store.put(key, json.dumps(value, indent=1).encode())

    def _get(self, key: str, missing: str) -> dict[str, Any]:
        try:
            raw: dict[str, Any] = json.loads(self.store.get(key))
        except ObjectNotFoundError as exc:
            raise NotFoundError(f"{missing}; StartLoop creates loops") from exc
        return raw
