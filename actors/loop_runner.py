"""One continuous AL loop, step by step, from whatever its stored state says to its end.

Each round: retrain on the labeled set (Ray Train) and publish the models -> score and rank
the pool on the ranking actor -> take the top-b of the strategy among samples never labeled
or queried -> export the query list -> wait for its labels (the oracle submits them through
the ingress, the one writer of labels; people submit them with SubmitLabels) -> next round.

Every step is saved before the next begins and every step can run twice (a retrain resumes
its Ray Train run, a ranking round is found by its id, a selection is recomputed from stored
scores, label submissions are idempotent), so a runner rebuilt from the store after a crash
continues where the last one stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import ray
from ray import serve

from actors.ranking import RoundUnavailableError, ranking_actor
from gestalt_al.data import ImageSet
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.distributed.retrain import Retrained, RoundData, retrain_and_publish
from gestalt_al.models.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from gestalt_al.ranking import select_top
from gestalt_al.service.audit import AuditEvent, AuditLog
from gestalt_al.service.errors import FailedPreconditionError, InvalidArgumentError
from gestalt_al.service.labels import LabelBook
from gestalt_al.service.loops import LoopBook, LoopRecord, LoopRound, Query
from gestalt_al.service.pool import PoolCatalog, pool_images
from gestalt_al.service.query_lists import QueryRow, image_key, write_query_list
from gestalt_al.service.reference_data import Oracle, load_reference, training_labels
from gestalt_al.service.rounds import RoundBook, RoundRecord, round_id_for
from gestalt_al.storage import open_store
from gestalt_al.training import evaluate
from services import metrics

INGRESS = "ActiveLearningAPI"  # the Serve deployment that writes labels
logger = logging.getLogger(__name__)
OnCount = Callable[[int], None]  # how many queried samples have labels now


class ModelRounds:
    """Registry round numbers, one per training attempt: the models of a retried attempt may
    differ in their last bits, and a published round never changes, so each attempt takes a
    number no published model and no other loop of this coordinator holds."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.reserved: set[int] = set()
        self.lock = threading.Lock()

    def reserve(self) -> int:
        with self.lock:
            published = [
                int(model_id.split("-")[1][1:])
                for kind in ("gestalt", "sampler")
                for model_id in self.registry.ids(kind)
            ]
            number = max([*published, *self.reserved], default=-1) + 1
            self.reserved.add(number)
            return number


class LoopRunner:
    """Runs one loop; built from the stored record, and checks the config against the pool
    and the reference data on construction (errors here are the client's)."""

    def __init__(
        self, record: LoopRecord, storage: str, app_name: str, namespace: str,
        model_rounds: ModelRounds,
    ) -> None:  # fmt: skip
        store = open_store(storage)
        self.record, self.config = record, record.config
        self.storage, self.app_name, self.model_rounds = storage, app_name, model_rounds
        self.book, self.rounds = LoopBook(store), RoundBook(store)
        self.catalog = PoolCatalog(store)
        self.labels = LabelBook(self.catalog)
        self.registry = model_rounds.registry
        self.manifest = self.catalog.manifest(self.config.pool_id)
        self.ids = self.catalog.ids(self.config.pool_id)
        self._check_pool()
        self.reference = load_reference(self.config, self.manifest, self.ids)
        self.oracle = Oracle(self.reference.truth) if self.reference.truth is not None else None
        self.ranking = ranking_actor(storage, app_name, namespace)

    def _check_pool(self) -> None:
        shape, model = self.manifest.image_shape, self.config.model
        if len(shape) != 2:
            raise InvalidArgumentError(f"loops need single-channel [H, W] pools, got {shape}")
        size = model.image_size or shape[-1]
        if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
            raise InvalidArgumentError(
                f"model.image_size {size} must lie in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}"
            )
        if model.with_sampler and size % 16:
            raise InvalidArgumentError(f"the sampler needs an image size divisible by 16, got "
                                       f"{size}; set model.image_size")  # fmt: skip
        if self.config.initial_labeled >= len(self.ids):
            raise InvalidArgumentError(
                f"initial_labeled ({self.config.initial_labeled}) must be smaller than the "
                f"pool ({len(self.ids)} samples)"
            )

    @property
    def loop_id(self) -> str:
        return self.config.loop_id

    def run(self) -> LoopRecord:
        if self.record.state == "initial_labels":
            self._initial_labels()
        while self.record.state == "running":
            self._run_round(self.record.round)
        return self.record

    # --- the initial set ----------------------------------------------------------------
    def _initial_labels(self) -> None:
        """A seeded random set tops the pool's labels up to ``initial_labeled``."""
        if not self.record.initial:
            labeled = self._labeled_now()
            need = self.config.initial_labeled - len(labeled)
            if need > 0:
                unlabeled = np.setdiff1d(np.arange(len(self.ids)), labeled)
                shuffled = np.random.default_rng(self.config.seed).permutation(unlabeled)
                queries = self._queries(np.sort(shuffled[:need]), np.zeros(need))
                self._export(queries, None, "random", "")
                self._save_loop(initial=queries)
                logger.info("loop %s: %d initial samples queried", self.loop_id, need)
        self._wait_for_labels(self.record.initial, "", 0, lambda count: None)
        self._save_loop(state="running", round=0)

    # --- rounds -------------------------------------------------------------------------
    def _run_round(self, number: int) -> None:
        metrics.loop_round().set(number, {"loop": self.loop_id})
        state = self.book.round(self.loop_id, number) or self._new_round(number)
        for stage, step in (
            ("training", self._train),
            ("scoring", self._score_and_query),
            ("awaiting_labels", self._await_labels),
        ):
            if state.stage == stage:
                tags = {"loop": self.loop_id, "stage": stage}
                metrics.loop_stage_started().set(time.time(), tags)
                started = time.perf_counter()
                try:
                    state = step(state)
                finally:  # a loop that failed is not stuck
                    metrics.loop_stage_started().set(0, tags)
                seconds = time.perf_counter() - started
                metrics.loop_stage_seconds().observe(seconds, {"stage": stage})
                spent = {**state.seconds, stage: state.seconds.get(stage, 0.0) + seconds}
                state = self._save_round(state.update(seconds=spent))
        if state.final:
            self._save_loop(state="finished", stop_reason=state.stop_reason)
            logger.info("loop %s finished: %s", self.loop_id, state.stop_reason)
        else:
            self._save_loop(round=number + 1)

    def _new_round(self, number: int) -> LoopRound:
        labeled = self._labeled_now()
        reason = self._stop_reason(number, labeled)
        self.book.save_labeled(self.loop_id, number, labeled, self.ids[labeled])
        logger.info("loop %s round %d: %d labeled%s", self.loop_id, number, len(labeled),
                    f"; last round ({reason})" if reason else "")  # fmt: skip
        return self._save_round(LoopRound(number, len(labeled), stop_reason=reason))

    def _stop_reason(self, number: int, labeled: np.ndarray) -> str:
        config = self.config
        if config.max_rounds and number >= config.max_rounds:
            return f"max_rounds: {number} rounds queried"
        if config.max_labels and len(labeled) >= config.max_labels:
            return f"max_labels: {len(labeled)} samples labeled"
        if not self._available(number, labeled).size:
            return "pool exhausted: every sample is labeled or was queried"
        return ""

    def _train(self, state: LoopRound) -> LoopRound:
        state = self._save_round(state.update(model_round=self.model_rounds.reserve()))
        labeled = self._round_labeled(state.round)
        sampler = self.config.model.with_sampler and not state.final  # a last round ranks nothing
        retrained = retrain_and_publish(
            self._round_data(labeled, with_unlabeled=sampler),
            self.config.model, self.registry, state.model_round,
            runs=f"{self.storage.rstrip('/')}/loop-runs/{self.loop_id}",
            run_name=f"r{state.round:04d}", seed=self.config.seed, with_sampler=sampler,
        )  # fmt: skip
        published = " and ".join(filter(None, (retrained.model_id, retrained.sampler_id)))
        logger.info("loop %s round %d: published %s", self.loop_id, state.round, published)
        return state.update(
            stage="done" if state.final else "scoring",
            model_id=retrained.model_id,
            sampler_model_id=retrained.sampler_id,
            metrics=self._evaluate(retrained),
        )

    def _round_data(self, labeled: np.ndarray, with_unlabeled: bool) -> RoundData:
        stored = self.labels.refresh(self.config.pool_id)
        labels = training_labels(stored, labeled, self.reference.multi_label)
        unlabeled = None
        if with_unlabeled:
            unlabeled = self._image_set(np.setdiff1d(np.arange(len(self.ids)), labeled), None)
        return RoundData(self._image_set(labeled, labels), unlabeled, self.reference.validation)

    def _image_set(self, indices: np.ndarray, labels: np.ndarray | None) -> ImageSet:
        return ImageSet(
            self.ids[indices], pool_images(self.manifest, self.ids, indices), labels,
            self.manifest.label_names, self.reference.multi_label,
            f"pool {self.config.pool_id}",
        )  # fmt: skip

    def _evaluate(self, retrained: Retrained) -> dict[str, object]:
        """Validation (and test) metrics of the round's best-validation model."""
        splits = {"val": self.reference.validation, "test": self.reference.test}
        found: dict[str, object] = {
            "best_epoch": retrained.task.best_epoch,
            "history": retrained.task.history,
        }
        for split, data in splits.items():
            if data is None or data.labels is None:
                continue
            scores = evaluate(retrained.task.model, data.images, data.labels, retrained.config)
            found[split] = scores.as_dict()
            auc = {"loop": self.loop_id, "split": split}
            metrics.loop_macro_auc().set(scores.macro_auc, auc)
        return found

    def _score_and_query(self, state: LoopRound) -> LoopRound:
        labeled = self._round_labeled(state.round)
        round_id = round_id_for(
            self.config.pool_id, state.model_id, state.sampler_model_id, labeled
        )
        state = self._save_round(state.update(service_round_id=round_id))
        record: RoundRecord = ray.get(  # type: ignore[assignment]
            self.ranking.start.remote(
                round_id, self.config.pool_id, state.model_id, state.sampler_model_id, labeled
            )
        )
        shown = -1
        while not record.finished:
            if record.shards_done != shown:
                shown = record.shards_done
                logger.info("loop %s round %d: %d/%d shards scored", self.loop_id,
                            state.round, shown, record.shards_total)  # fmt: skip
            time.sleep(1)
            record = ray.get(self.ranking.status.remote(round_id))
        if record.state == "failed":
            failure = RoundUnavailableError if record.unavailable else FailedPreconditionError
            raise failure(f"ranking round {round_id} failed: {record.message}")
        queries = self._select(state, record)
        self._export(queries, state.round, self.config.strategy, round_id)
        logger.info("loop %s round %d: %d queried", self.loop_id, state.round, len(queries))
        return state.update(stage="awaiting_labels", queries=queries)

    def _select(self, state: LoopRound, record: RoundRecord) -> tuple[Query, ...]:
        """The strategy's top-b among candidates never labeled or queried: the ranking left
        out the round's labeled set; here also labels that arrived since and every query of
        the loop so far (some may still be unlabeled)."""
        strategy = self.config.strategy
        if strategy not in record.strategies:
            raise FailedPreconditionError(
                f"ranking round {record.round_id} cannot answer {strategy!r} (it has "
                f"{list(record.strategies)}); start a loop with another strategy"
            )
        scores = self.rounds.scores(record.round_id)
        labeled = self._labeled_now()
        keep = ~np.isin(scores.candidates, np.union1d(labeled, self._queried_before(state.round)))
        candidates = scores.candidates[keep]
        budget = min(self.config.budget, len(candidates))
        if self.config.max_labels:
            budget = min(budget, self.config.max_labels - len(labeled))
        if budget < self.config.budget:
            logger.info("loop %s round %d: %d left to query, not %d", self.loop_id,
                        state.round, max(budget, 0), self.config.budget)  # fmt: skip
        if budget < 1:
            return ()
        chosen = select_top(scores.scores[strategy][keep], candidates, budget)
        return self._queries(candidates[chosen.indices], chosen.scores)

    def _await_labels(self, state: LoopRound) -> LoopRound:
        def save_count(count: int) -> None:
            nonlocal state
            state = self._save_round(state.update(num_query_labeled=count))

        self._wait_for_labels(
            state.queries, state.service_round_id, state.num_query_labeled, save_count
        )
        return state.update(stage="done")

    def _wait_for_labels(
        self, queries: Sequence[Query], round_id: str, already: int, on_count: OnCount
    ) -> None:
        """The oracle answers at once; otherwise poll the stored labels until every queried
        sample has one (``already`` of them had one when the wait was last saved)."""
        if self.oracle is not None and queries:
            answer = self.oracle.answer([q.sample_id for q in queries])
            handle = serve.get_deployment_handle(INGRESS, self.app_name)
            accepted, unchanged = handle.record_labels.remote(
                self.config.pool_id, answer, round_id, f"oracle:{self.loop_id}"
            ).result()
            logger.info("loop %s: oracle labels accepted %d, unchanged %d", self.loop_id,
                        accepted, unchanged)  # fmt: skip
        wanted = np.array([q.index for q in queries], dtype=np.int64)
        while True:
            count = int(np.isin(wanted, self._labeled_now()).sum())
            if count != already:  # labels are never taken back, so it only grows
                metrics.loop_labels_acquired().inc(count - already, {"loop": self.loop_id})
                already = count
                on_count(count)
            if count == len(wanted):
                return
            time.sleep(self.config.poll_seconds)

    # --- helpers ------------------------------------------------------------------------
    def _labeled_now(self) -> np.ndarray:
        stored = self.labels.refresh(self.config.pool_id)
        return np.array(sorted(stored), dtype=np.int64)

    def _round_labeled(self, number: int) -> np.ndarray:
        labeled = self.book.labeled(self.loop_id, number)
        assert labeled is not None  # written before the round's record
        return labeled

    def _queried_before(self, number: int) -> np.ndarray:
        earlier = [q.index for q in self.record.initial]
        earlier += [
            q.index for state in self.book.rounds(self.loop_id) if state.round < number
            for q in state.queries
        ]  # fmt: skip
        return np.array(sorted(set(earlier)), dtype=np.int64)

    def _available(self, number: int, labeled: np.ndarray) -> np.ndarray:
        taken = np.union1d(labeled, self._queried_before(number))
        return np.setdiff1d(np.arange(len(self.ids)), taken)

    def _queries(self, indices: np.ndarray, scores: np.ndarray) -> tuple[Query, ...]:
        return tuple(
            Query(int(i), str(self.ids[i]), rank, float(score))
            for rank, (i, score) in enumerate(zip(indices, scores, strict=True), 1)
        )

    def _export(
        self, queries: Sequence[Query], number: int | None, strategy: str, round_id: str
    ) -> None:
        prefix = self.book.query_prefix(self.loop_id, number)
        indices = np.array([q.index for q in queries], dtype=np.int64)
        starts = np.array([s.start for s in self.manifest.shards])
        owners = np.searchsorted(starts, indices, side="right") - 1
        shards = [self.manifest.shards[owner] for owner in owners]
        rows = [
            QueryRow(q.sample_id, q.rank, q.score, number, strategy,
                     uri=self.book.uri(image_key(prefix, q.rank)),
                     shard_uri=self.manifest.shard_uri(shard), shard_index=q.index - shard.start)
            for q, shard in zip(queries, shards, strict=True)
        ]  # fmt: skip
        header: dict[str, object] = {
            "loop_id": self.loop_id,
            "pool_id": self.config.pool_id,
            "round": number,
            "strategy": strategy,
            "service_round_id": round_id,
        }
        images = pool_images(self.manifest, self.ids, indices)
        write_query_list(self.book.store, prefix, rows, images, header)
        # Audited like a GetSelection: it is also what lets labelers answer this query.
        ids = [q.sample_id for q in queries]
        details = {"strategy": strategy, "loop_id": self.loop_id, "loop_round": number}
        AuditLog(self.book.store).record(AuditEvent(
            "selection", f"loop:{self.loop_id}", "operator", self.config.pool_id, round_id, ids,
            details=details,
        ))  # fmt: skip

    def _save_round(self, state: LoopRound) -> LoopRound:
        self.book.save_round(self.loop_id, state)
        return state

    def _save_loop(self, **changes: object) -> None:
        self.record = self.record.update(**changes)
        self.book.save(self.record)
