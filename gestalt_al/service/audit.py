"""The audit trail: every selection served and every label submission, one immutable object
per event in the service's object store (who, when, which round, which sample ids).

Events are filed under their round, so the same records answer "which samples did this round
query?", the rule that labels may only be submitted for queried samples.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from gestalt_al.storage import ObjectStore, join_key

PREFIX = "audit"
NO_ROUND = "no-round"  # labels submitted without a round (an operator's seed set)


@dataclass(frozen=True)
class AuditEvent:
    kind: str  # "selection" (ids handed out to label) or "labels" (a submission)
    principal: str  # the authenticated caller ("anonymous" with access control off)
    role: str
    pool_id: str
    round_id: str
    sample_ids: Sequence[str]
    outcome: str = "OK"  # the status code the caller got
    details: Mapping[str, object] = field(default_factory=dict)


class AuditLog:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._queried: dict[str, set[str]] = {}
        self._seen: dict[str, set[str]] = {}  # event keys already merged into _queried
        self._lock = threading.Lock()

    def record(self, event: AuditEvent) -> str:
        """Store the event; returns its key. Raises the store's errors (nothing is served
        unaudited: the caller fails the request)."""
        now = time.time_ns()
        body = asdict(event) | {
            "sample_ids": list(event.sample_ids),
            "details": dict(event.details),
            "time": datetime.fromtimestamp(now / 1e9, UTC).isoformat(),
        }
        data = json.dumps(body, sort_keys=True).encode()
        name = f"{now:020d}-{event.kind}-{hashlib.sha256(data).hexdigest()[:12]}.json"
        key = join_key(self._prefix(event.round_id), name)
        self.store.put(key, data)
        if event.kind == "selection" and event.outcome == "OK":
            with self._lock:
                if event.round_id in self._queried:
                    self._queried[event.round_id].update(event.sample_ids)
                    self._seen[event.round_id].add(key)
        return key

    def queried(self, round_id: str) -> set[str]:
        """Every sample id a selection of ``round_id`` handed out, by any caller or loop."""
        with self._lock:
            queried = self._queried.setdefault(round_id, set())
            seen = self._seen.setdefault(round_id, set())
            for key in sorted(set(self.store.list(self._prefix(round_id))) - seen):
                if "-selection-" in key:
                    event = json.loads(self.store.get(key))
                    if event["outcome"] == "OK":
                        queried.update(event["sample_ids"])
                seen.add(key)
            return set(queried)

    def events(self, round_id: str = "") -> list[dict[str, object]]:
        """The stored events of one round (or of submissions without one), oldest first."""
        keys = sorted(self.store.list(self._prefix(round_id)))
        return [json.loads(self.store.get(key)) for key in keys]

    @staticmethod
    def _prefix(round_id: str) -> str:
        return join_key(PREFIX, round_id or NO_ROUND)
