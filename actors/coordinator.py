"""The loop coordinator: a named, detached actor that runs every continuous AL loop of the
service, one thread per loop (see ``loop_runner`` for what a loop does).

It keeps nothing that is not in the object store: killed at any point, Ray restarts it
(``max_restarts=-1``), it reads the loops that were running and continues each from its last
saved step. After a restart of the whole cluster, deploying the service again creates it
and it does the same.
"""

from __future__ import annotations

import logging
import threading
import time

import ray

from actors.detached import detached_actor
from actors.loop_runner import LoopRunner, ModelRounds
from actors.ranking import RoundUnavailableError
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.service.errors import AlreadyExistsError, ServiceError, root_cause
from gestalt_al.service.loop_config import LoopConfig
from gestalt_al.service.loops import LoopBook, LoopRecord
from gestalt_al.storage import StoreUnavailableError, open_store
from services import metrics

COORDINATOR_NAME = "gestalt-loop-coordinator"
logger = logging.getLogger(__name__)


class LoopCoordinator:
    def __init__(self, storage: str, app_name: str, namespace: str) -> None:
        # A Ray worker's root logger has no handler: without one the progress lines (round,
        # stage, shards scored, labels arrived) would not reach the actor's log.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        self.storage, self.app_name, self.namespace = storage, app_name, namespace
        self.book = LoopBook(open_store(storage))
        self.model_rounds = ModelRounds(ModelRegistry(storage))
        self.running: set[str] = set()
        self.lock = threading.Lock()
        for record in self.book.active():
            logger.info("resuming loop %s at round %d", record.loop_id, record.round)
            try:
                self._launch(self._runner(record))
            except Exception as exc:  # e.g. its reference data is gone: the loop fails
                self._fail(record, exc)

    def start(self, config: LoopConfig) -> LoopRecord:
        """Start a new loop, resume a failed one with the same config, or report it; the
        config is checked against the pool and the data before this returns."""
        with self.lock:
            if not self.book.exists(config.loop_id):
                record = LoopRecord(config)
            else:
                record = self.book.load(config.loop_id)
                if record.config != config:
                    raise AlreadyExistsError(
                        f"loop {config.loop_id!r} exists with another config; StartLoop with "
                        "its config (GetLoop shows it) or choose another loop_id"
                    )
                if record.loop_id in self.running or record.state == "finished":
                    return record
                if record.state == "failed":
                    started = self.book.round(record.loop_id, 0) is not None
                    record = record.update(
                        state="running" if started else "initial_labels",
                        message="", unavailable=False,
                    )  # fmt: skip
            runner = self._runner(record)
            self.book.save(record)
            self._launch(runner)
            return record

    def ping(self) -> bool:
        return True

    def _runner(self, record: LoopRecord) -> LoopRunner:
        return LoopRunner(record, self.storage, self.app_name, self.namespace, self.model_rounds)

    def _launch(self, runner: LoopRunner) -> None:
        self.running.add(runner.loop_id)
        threading.Thread(target=self._run, args=(runner,), daemon=True).start()

    def _run(self, runner: LoopRunner) -> None:
        try:
            runner.run()
        except Exception as exc:
            self._fail(runner.record, exc)
        finally:
            with self.lock:
                self.running.discard(runner.loop_id)

    def _fail(self, record: LoopRecord, exc: Exception) -> None:
        """A failed loop keeps its rounds; StartLoop with the same config resumes it."""
        cause = root_cause(exc)
        if isinstance(cause, StoreUnavailableError):
            if not isinstance(cause, RoundUnavailableError):  # the ranking actor saw that one
                metrics.store_unavailable().set(time.time(), {"component": "loops"})
            message, unavailable = f"object store unavailable: {cause}", True
        elif isinstance(cause, ServiceError | ValueError):
            message, unavailable = str(cause), False
        else:  # Ray failures: a dead replica or worker group
            logger.exception("loop %s failed", record.loop_id)
            message, unavailable = f"{type(cause).__name__}: {cause}", True
        if unavailable:
            message += "; StartLoop with the same config resumes the loop"
        try:
            self.book.save(record.update(state="failed", message=message, unavailable=unavailable))
        except StoreUnavailableError:
            logger.warning("loop %s failed and its record could not be saved", record.loop_id)


def coordinator_actor(
    storage: str, app_name: str, namespace: str
) -> ray.actor.ActorHandle[LoopCoordinator]:
    """The named, detached coordinator (created on first use, found afterwards)."""
    return detached_actor(
        LoopCoordinator, COORDINATOR_NAME, namespace, storage, app_name, namespace
    )
