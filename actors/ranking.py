"""The ranking actor: runs rounds (Ray Data scoring through Serve, then global ranking over
all shards) and keeps each round's record in the object store.

It is a named, detached actor with unlimited restarts. A restarted actor reads the records of
unfinished rounds and resumes them: shards whose results are already stored are not scored
again, so a round interrupted at any point ends with the same scores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import numpy as np
import ray

from actors.detached import detached_actor
from actors.scoring import result_name, score_shards
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.service.errors import ServiceError, root_cause
from gestalt_al.service.models import SamplerModel
from gestalt_al.service.pool import PoolCatalog
from gestalt_al.service.rounds import STATES, RoundBook, RoundRecord
from gestalt_al.service.strategies import round_scores
from gestalt_al.storage import StoreUnavailableError, open_store
from services import metrics

ACTOR_NAME = "gestalt-ranking"
logger = logging.getLogger(__name__)


class RoundUnavailableError(StoreUnavailableError):
    """A round that failed as unavailable (storage or Ray unreachable), reported again later:
    UNAVAILABLE to a client, but no new store failure for the metrics."""


class RankingActor:
    def __init__(self, storage: str, app_name: str) -> None:
        self.storage = storage
        self.app_name = app_name
        store = open_store(storage)
        self.book = RoundBook(store)
        self.catalog = PoolCatalog(store)
        self.registry = ModelRegistry(storage)
        self.records: dict[str, RoundRecord] = {}
        self.running: set[str] = set()
        self.lock = threading.RLock()
        for record in self.book.unfinished():
            logger.info("resuming round %s at %s", record.round_id, record.state)
            self._launch(record)

    def start(
        self, round_id: str, pool_id: str, model_id: str, sampler_model_id: str,
        labeled: np.ndarray,
    ) -> RoundRecord:  # fmt: skip
        """Start (or resume, or just report) the round; returns at once."""
        with self.lock:
            if round_id in self.running:
                return self.records[round_id]
            if self.book.exists(round_id):
                record = self.book.load(round_id)
                if record.state == "done":
                    return record
                record = record.update(state="scoring", message="", unavailable=False)
            else:
                manifest = self.catalog.manifest(pool_id)
                record = RoundRecord(
                    round_id, pool_id, model_id, sampler_model_id,
                    shards_total=len(manifest.shards), num_labeled=len(labeled),
                )  # fmt: skip
                self.book.save_labeled(round_id, labeled)
            self._save(record)
            self._launch(record)
            return record

    def ping(self) -> bool:
        return True

    def status(self, round_id: str) -> RoundRecord:
        with self.lock:
            if round_id in self.records:
                return self.records[round_id]
        return self.book.load(round_id)

    def _launch(self, record: RoundRecord) -> None:
        self.records[record.round_id] = record
        self.running.add(record.round_id)
        threading.Thread(target=self.run_round, args=(record,), daemon=True).start()
        self._publish_counts()

    def run_round(self, record: RoundRecord) -> None:
        """Score, rank and record one round in the calling thread; any failure ends in a
        ``failed`` record (``unavailable`` when storage or Ray could not be reached)."""
        try:
            self._score_and_rank(record)
        except Exception as exc:
            self._fail_with(record.round_id, exc)
        finally:
            with self.lock:
                self.running.discard(record.round_id)
            self._publish_counts()

    def _fail_with(self, round_id: str, exc: Exception) -> None:
        """The failed record for ``exc``, raised here or in a Ray Data task (then wrapped by
        Ray, and by its type also a ``StoreUnavailableError`` or ``ValueError``: the message
        comes from the error inside)."""
        cause = root_cause(exc)
        message = _task_message(cause)
        if isinstance(cause, StoreUnavailableError):
            metrics.store_unavailable().set(time.time(), {"component": "ranking"})
            self._fail(round_id, f"object store unavailable: {message}", unavailable=True)
        elif isinstance(cause, ServiceError | ValueError):
            self._fail(round_id, message, unavailable=False)
        else:  # Ray failures: a lost task, a scorer that kept dying
            logger.exception("round %s failed", round_id)
            message = f"scoring failed ({type(cause).__name__}: {message}); StartRound again"
            self._fail(round_id, message, unavailable=True)

    def _score_and_rank(self, record: RoundRecord) -> None:
        manifest = self.catalog.manifest(record.pool_id)
        results = self.book.results(record)
        done = results.done()
        pending = [s for s in manifest.shards if result_name(s.start) not in done]
        record = self._save(record.update(shards_done=len(manifest.shards) - len(pending)))
        started = time.perf_counter()
        if pending:
            ids = self.catalog.ids(record.pool_id)
            for _, seconds in score_shards(
                manifest, pending, ids, self.app_name, record.model_id,
                record.sampler_model_id, self.storage, results.prefix,
            ):  # fmt: skip
                total = {k: record.seconds.get(k, 0.0) + v for k, v in seconds.items()}
                record = self._save(
                    record.update(shards_done=record.shards_done + 1, seconds=total)
                )
        scored = time.perf_counter()
        record = self._save(record.update(state="ranking"))
        sampler = (
            SamplerModel.load(self.registry, record.sampler_model_id).strategy
            if record.sampler_model_id
            else None
        )
        names = [result_name(s.start) for s in manifest.shards]
        scores = round_scores(
            lambda: results.iter_weights(names),
            self.book.labeled(record.round_id),
            manifest.num_samples,
            sampler,
            record.round_id,
        )
        self.book.save_scores(record.round_id, scores)
        ranked = time.perf_counter()
        metrics.ranking_seconds().observe(ranked - scored)
        self._save(
            record.update(
                state="done",
                num_candidates=len(scores.candidates),
                strategies=tuple(sorted(scores.scores)),
                seconds={
                    **record.seconds,
                    "scoring_wall": scored - started,
                    "ranking": ranked - scored,
                },
            )
        )

    def _save(self, record: RoundRecord) -> RoundRecord:
        self.book.save(record)
        with self.lock:
            self.records[record.round_id] = record
        self._publish_counts()
        return record

    def _fail(self, round_id: str, message: str, unavailable: bool) -> None:
        with self.lock:
            record = self.records[round_id].update(
                state="failed", message=message, unavailable=unavailable
            )
            self.records[round_id] = record
        try:
            self.book.save(record)
        except StoreUnavailableError:
            logger.warning("round %s failed and its record could not be saved", round_id)

    def _publish_counts(self) -> None:
        with self.lock:
            counts = Counter(r.state for r in self.records.values())
            in_flight = sum(
                r.shards_total - r.shards_done for r in self.records.values()
                if r.state == "scoring"
            )  # fmt: skip
        for state in STATES:
            metrics.rounds_by_state().set(counts[state], {"state": state})
        metrics.shards_in_flight().set(in_flight)


def _task_message(error: BaseException) -> str:
    """The error's own message, without what Ray Data appends to an error raised in a map
    task (its retry count and settings: nothing a client can act on)."""
    return str(error).split("\nFailed to apply UDF transform", 1)[0]


def ranking_actor(
    storage: str, app_name: str, namespace: str
) -> ray.actor.ActorHandle[RankingActor]:
    """The named, detached ranking actor (created on first use, found afterwards)."""
    return detached_actor(RankingActor, ACTOR_NAME, namespace, storage, app_name)
