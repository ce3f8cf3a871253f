"""The gRPC ingress (``gestalt_al.v1.ActiveLearning`` and ``grpc.health.v1.Health``).

Every method runs its work off the event loop, maps each failure to one status code with a
message a person can act on, and counts the request by method and code. A bad request never
takes the replica down.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import faiss
import grpc
import numpy as np
import ray
from grpc_health.v1 import health_pb2
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.grpc_util import RayServegRPCContext

from actors.coordinator import coordinator_actor
from actors.loop_runner import INGRESS
from actors.ranking import RoundUnavailableError, ranking_actor
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.ranking import select_top
from gestalt_al.service.access import AccessPolicy, Principal
from gestalt_al.service.audit import AuditEvent, AuditLog
from gestalt_al.service.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    clip_message,
    root_cause,
)
from gestalt_al.service.labels import LabelBook
from gestalt_al.service.loops import LoopBook
from gestalt_al.service.models import GESTALT_KIND, SAMPLER_KIND
from gestalt_al.service.pool import PoolCatalog
from gestalt_al.service.rounds import (
    ROUND_ID,
    RoundBook,
    RoundRecord,
    parse_round_id,
    round_id_for,
)
from gestalt_al.service.strategies import STRATEGIES, RoundScores
from gestalt_al.storage import StoreAccessError, StoreUnavailableError, open_store
from gestalt_al.v1 import active_learning_pb2 as pb
from services import metrics
from services.loop_messages import loop_config_from_proto, loop_to_proto

Response = TypeVar("Response")
logger = logging.getLogger("ray.serve")  # into the replica's log file, as Serve's own lines
DEFAULT_PAGE, MAX_PAGE, MAX_NEIGHBOURS = 100, 10_000, 1000
_STATE = {
    "scoring": pb.ROUND_STATE_SCORING,
    "ranking": pb.ROUND_STATE_RANKING,
    "done": pb.ROUND_STATE_DONE,
    "failed": pb.ROUND_STATE_FAILED,
}
_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (StoreAccessError, grpc.StatusCode.UNAVAILABLE),
    (RayActorError, grpc.StatusCode.UNAVAILABLE),
)


def _status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    exc = error if isinstance(error, RayActorError) else root_cause(error)
    for kind, code in _CODES:
        if isinstance(exc, kind):
            hint = " (retry later; nothing stored was lost)" if code.name == "UNAVAILABLE" else ""
            return code, clip_message(f"{exc}{hint}")
    return grpc.StatusCode.INTERNAL, clip_message(f"internal error ({type(exc).__name__}): {exc}")


def _count_error(method: str, code: grpc.StatusCode, error: BaseException) -> None:
    """Count a failed request; a store that could not be reached also stamps its time (the
    storage alert), unless the error only repeats a round's earlier failure."""
    metrics.grpc_requests().inc(1, {"method": method, "code": code.name})
    cause = root_cause(error)
    if isinstance(cause, StoreUnavailableError) and not isinstance(cause, RoundUnavailableError):
        metrics.store_unavailable().set(time.time(), {"component": "ingress"})


def _unary(
    empty: Callable[[], Response],
) -> Callable[[Callable[[Any, Any], Response]], Callable[..., Any]]:
    """Authorize the caller, run a sync handler in a thread; on error set the code and return
    ``empty()``."""

    def wrap(handler: Callable[[Any, Any], Response]) -> Callable[..., Any]:
        async def method(self: Any, request: Any, grpc_context: RayServegRPCContext) -> Response:
            try:
                self.authorize(grpc_context, handler.__name__)
                response = await asyncio.to_thread(handler, self, request)
            except Exception as exc:
                code, message = _status(exc)
                grpc_context.set_code(code)
                grpc_context.set_details(message)
                _count_error(handler.__name__, code, exc)
                return empty()
            metrics.grpc_requests().inc(1, {"method": handler.__name__, "code": "OK"})
            return response

        # Not functools.wraps: Serve reads the signature to find ``grpc_context``.
        method.__name__, method.__doc__ = handler.__name__, handler.__doc__
        return method

    return wrap


# Bounded: Serve's default (5 at once, an unbounded queue) made 50 clients slower than one
# and 300 wait 43 s at the median (benchmarks/load.py); past 64 + 64 calls are refused with
# RESOURCE_EXHAUSTED. The TLS gateway's --max-concurrent-rpcs (64) admits outside clients.
@serve.deployment(
    name=INGRESS,
    num_replicas=1,
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=64,
    max_queued_requests=64,
)
class ActiveLearningAPI:
    """One replica: label submissions are serialised in it (see ``LabelBook``)."""

    def __init__(
        self,
        storage: str,
        app_name: str,
        namespace: str,
        auth_tokens_file: str,
        latents: Any,
        sampler: Any,
    ) -> None:
        self.access = AccessPolicy(auth_tokens_file)
        # The authenticated caller of the request being handled (asyncio.to_thread copies it
        # into the handler's thread). Made here: Serve pickles the class, and a ContextVar
        # cannot be pickled.
        self._caller: contextvars.ContextVar[Principal] = contextvars.ContextVar("caller")
        store = open_store(storage)
        self.audit = AuditLog(store)
        self.catalog = PoolCatalog(store)
        self.labels = LabelBook(self.catalog)
        self.rounds = RoundBook(store)
        self.registry = ModelRegistry(storage)
        self.scorers = (latents, sampler)
        self.ranking = ranking_actor(storage, app_name, namespace)
        self.loops = LoopBook(store)
        self.coordinator = coordinator_actor(storage, app_name, namespace)
        self._scores: OrderedDict[str, RoundScores] = OrderedDict()
        self._indexes: OrderedDict[str, list[faiss.IndexIDMap2]] = OrderedDict()

    def authorize(self, grpc_context: RayServegRPCContext, method: str) -> None:
        """UNAUTHENTICATED / PERMISSION_DENIED before any work; the caller is kept for the
        audit trail. Refusals are logged by principal or reason, never with the token."""
        try:
            principal = self.access.authorize(grpc_context.invocation_metadata(), method)
        except (UnauthenticatedError, PermissionDeniedError) as exc:
            logger.warning("refused %s from %s: %s", method, grpc_context.peer(), exc)
            raise
        self._caller.set(principal)

    # --- health -----------------------------------------------------------------------
    async def Check(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        """SERVING once both scoring deployments and the ranking actor answer; NOT_FOUND for
        a service other than '' (the server) or the API (the health checking protocol)."""
        if request.service not in ("", "gestalt_al.v1.ActiveLearning"):
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(clip_message(f"unknown service {request.service!r}"))
            return health_pb2.HealthCheckResponse()
        try:
            await asyncio.wait_for(asyncio.gather(*(s.ready.remote() for s in self.scorers)), 5)
            await asyncio.wait_for(self.ranking.ping.remote(), 5)
            status = health_pb2.HealthCheckResponse.SERVING
        except Exception:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    # --- pools and labels ---------------------------------------------------------------
    @_unary(pb.Pool)
    def RegisterPool(self, request: pb.RegisterPoolRequest) -> pb.Pool:  # noqa: N802
        if not request.uri:
            raise InvalidArgumentError("uri is required: a folder or s3://bucket/prefix")
        manifest = self.catalog.register(request.pool_id, request.uri)
        return self._pool(manifest.pool_id)

    def _pool(self, pool_id: str) -> pb.Pool:
        manifest = self.catalog.manifest(pool_id)
        return pb.Pool(
            pool_id=pool_id,
            uri=manifest.uri,
            num_samples=manifest.num_samples,
            num_shards=len(manifest.shards),
            num_classes=manifest.num_classes,
            num_labeled=len(self.labels.labels(pool_id)),
        )

    @_unary(pb.SubmitLabelsResponse)
    def SubmitLabels(self, request: pb.SubmitLabelsRequest) -> pb.SubmitLabelsResponse:  # noqa: N802
        accepted, unchanged = self._submit(
            request.pool_id,
            [(item.sample_id, list(item.labels)) for item in request.labels],
            request.round_id,
            request.submitter,
            self._caller.get(),
        )
        return pb.SubmitLabelsResponse(
            accepted=accepted,
            unchanged=unchanged,
            num_labeled=len(self.labels.labels(request.pool_id)),
        )

    async def record_labels(
        self, pool_id: str, labels: list[tuple[str, list[float]]], round_id: str, submitter: str
    ) -> tuple[int, int]:
        """SubmitLabels for callers inside the cluster (a loop's oracle, through a deployment
        handle), so that this replica stays the one writer of labels."""
        caller = Principal(submitter, "operator")  # trusted: only reachable inside the cluster
        return await asyncio.to_thread(self._submit, pool_id, labels, round_id, submitter, caller)

    def _submit(
        self,
        pool_id: str,
        labels: list[tuple[str, list[float]]],
        round_id: str,
        submitter: str,
        caller: Principal,
    ) -> tuple[int, int]:
        """Store labels and audit the submission, refused ones included (with their code)."""
        ids = [sample for sample, _ in labels]
        try:
            self._check_queried(pool_id, ids, round_id, caller)
            accepted, unchanged = self.labels.submit(pool_id, labels, round_id, submitter)
        except Exception as exc:
            named = round_id if ROUND_ID.match(round_id) else ""  # a bad one is no object key
            event = AuditEvent("labels", caller.name, caller.role, pool_id, named, ids,
                               _status(exc)[0].name,
                               {"submitter": submitter, "round_id": round_id[:200]})  # fmt: skip
            try:
                self.audit.record(event)
            except Exception:  # the store is down: the request's own error goes back
                logger.exception("could not audit a refused label submission")
            raise
        details = {"submitter": submitter, "accepted": accepted, "unchanged": unchanged}
        self.audit.record(
            AuditEvent("labels", caller.name, caller.role, pool_id, round_id, ids, "OK", details)
        )
        return accepted, unchanged

    def _check_queried(
        self, pool_id: str, ids: list[str], round_id: str, caller: Principal
    ) -> None:
        """Labels name the round that queried them, and only its queried samples; only an
        operator may submit labels outside a round (a seed set, an import)."""
        if not round_id:
            if caller.role != "operator":
                raise PermissionDeniedError(
                    f"{caller.name!r} ({caller.role}) must name the round that queried these "
                    "samples (round_id); labels without a round need the operator role"
                )
            return
        record = self.rounds.load(round_id)  # NOT_FOUND for an unknown round
        if record.pool_id != pool_id:
            raise InvalidArgumentError(
                f"round {round_id} ranked pool {record.pool_id!r}, not {pool_id!r}"
            )
        missing = sorted(set(ids) - self.audit.queried(round_id))
        if missing:
            raise FailedPreconditionError(
                f"{len(missing)} sample(s) were not queried in round {round_id}, e.g. "
                f"{missing[:3]}; submit labels only for samples a selection of that round "
                "returned (nothing from this request was stored)"
            )

    # --- rounds -------------------------------------------------------------------------
    @_unary(pb.Round)
    def StartRound(self, request: pb.StartRoundRequest) -> pb.Round:  # noqa: N802
        self.catalog.manifest(request.pool_id)
        self._check_model(request.model_id, GESTALT_KIND)
        if request.sampler_model_id:
            self._check_model(request.sampler_model_id, SAMPLER_KIND)
        labeled = self.labels.labeled_indices(request.pool_id)
        round_id = round_id_for(
            request.pool_id, request.model_id, request.sampler_model_id, labeled
        )
        record: RoundRecord = ray.get(  # type: ignore[assignment]
            self.ranking.start.remote(
                round_id, request.pool_id, request.model_id, request.sampler_model_id, labeled
            )
        )
        return _round(record)

    def _check_model(self, model_id: str, kind: str) -> None:
        if not model_id.startswith(f"{kind}-"):
            raise InvalidArgumentError(f"{model_id!r} is not a {kind} model id ('{kind}-r0001-…')")
        try:
            found = self.registry.exists(model_id)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from exc
        if not found:
            raise NotFoundError(f"no published model {model_id!r}; publish it to the registry")

    @_unary(pb.Round)
    def GetRound(self, request: pb.GetRoundRequest) -> pb.Round:  # noqa: N802
        return _round(self._record(request.round_id))

    def _record(self, round_id: str) -> RoundRecord:
        parse_round_id(round_id)
        record: RoundRecord = ray.get(self.ranking.status.remote(round_id))  # type: ignore[assignment]
        return record

    # --- selections ---------------------------------------------------------------------
    @_unary(pb.SelectionPage)
    def GetSelection(self, request: pb.GetSelectionRequest) -> pb.SelectionPage:  # noqa: N802
        page_size = request.page_size or DEFAULT_PAGE
        if not 1 <= page_size <= MAX_PAGE:
            raise InvalidArgumentError(f"page_size must be 0 (= {DEFAULT_PAGE}) to {MAX_PAGE}")
        ranked = self._selection(request)
        token = request.page_token or "0"  # a token is a decimal offset, as handed out below
        offset = int(token) if token.isascii() and token.isdigit() and len(token) < 19 else -1
        if not 0 <= offset <= len(ranked):
            raise InvalidArgumentError(f"page_token {request.page_token!r} is not from this query")
        end = min(offset + page_size, len(ranked))
        self._audit_selection(request, ranked[offset:end])
        return pb.SelectionPage(
            samples=ranked[offset:end],
            next_page_token=str(end) if end < len(ranked) else "",
            total=len(ranked),
        )

    async def StreamSelection(  # noqa: N802
        self, request: pb.GetSelectionRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[pb.SelectedSample]:
        try:
            self.authorize(grpc_context, "StreamSelection")
            ranked = await asyncio.to_thread(self._selection, request)
            await asyncio.to_thread(self._audit_selection, request, ranked)
        except Exception as exc:
            code, message = _status(exc)
            grpc_context.set_code(code)
            grpc_context.set_details(message)
            _count_error("StreamSelection", code, exc)
            # A stream that yields nothing ends OK; Serve sends the code set above only when
            # the method raises after setting it.
            raise
        metrics.grpc_requests().inc(1, {"method": "StreamSelection", "code": "OK"})
        for sample in ranked:
            yield sample

    def _selection(self, request: pb.GetSelectionRequest) -> list[pb.SelectedSample]:
        if request.strategy not in STRATEGIES:
            raise InvalidArgumentError(
                f"unknown strategy {request.strategy!r}; choose one of {list(STRATEGIES)}"
            )
        record = self._finished(request.round_id)
        if request.strategy not in record.strategies:
            raise FailedPreconditionError(_missing_strategy(request.strategy, record))
        if request.budget < 1:
            raise InvalidArgumentError(f"budget must be >= 1, got {request.budget}")
        if request.budget > record.num_candidates:
            raise InvalidArgumentError(
                f"budget {request.budget} is larger than the {record.num_candidates} unlabeled "
                f"samples this round ranked"
            )
        scores = self._round_scores(record.round_id)
        chosen = select_top(scores.scores[request.strategy], scores.candidates, request.budget)
        indices = scores.candidates[chosen.indices]
        manifest = self.catalog.manifest(record.pool_id)
        ids = self.catalog.ids(record.pool_id)
        starts = np.array([s.start for s in manifest.shards])
        shard_of = np.searchsorted(starts, indices, side="right") - 1
        return [
            pb.SelectedSample(
                sample_id=str(ids[i]),
                rank=rank,
                score=float(score),
                uri=manifest.shard_uri(manifest.shards[s]),
            )
            for rank, (i, score, s) in enumerate(
                zip(indices, chosen.scores, shard_of, strict=True), 1
            )
        ]

    def _audit_selection(
        self, request: pb.GetSelectionRequest, samples: list[pb.SelectedSample]
    ) -> None:
        """Before any id leaves: who was handed which samples to label."""
        caller = self._caller.get()
        pool_id, _ = parse_round_id(request.round_id)
        details = {"strategy": request.strategy, "budget": request.budget,
                   "page_token": request.page_token}  # fmt: skip
        ids = [sample.sample_id for sample in samples]
        self.audit.record(AuditEvent("selection", caller.name, caller.role, pool_id,
                                     request.round_id, ids, "OK", details))  # fmt: skip

    def _finished(self, round_id: str) -> RoundRecord:
        record = self._record(round_id)
        if record.state == "failed":
            if record.unavailable:
                raise RoundUnavailableError(f"round {round_id} failed: {record.message}")
            raise FailedPreconditionError(f"round {round_id} failed: {record.message}")
        if record.state != "done":
            raise FailedPreconditionError(
                f"round {round_id} is still {record.state} ({record.shards_done}/"
                f"{record.shards_total} shards scored); poll GetRound until it is DONE"
            )
        return record

    def _round_scores(self, round_id: str) -> RoundScores:
        if round_id not in self._scores:
            self._scores[round_id] = self.rounds.scores(round_id)
            if len(self._scores) > 4:
                self._scores.popitem(last=False)
        return self._scores[round_id]

    # --- continuous loops -----------------------------------------------------------------
    @_unary(pb.Loop)
    def StartLoop(self, request: pb.LoopConfig) -> pb.Loop:  # noqa: N802
        config = loop_config_from_proto(request)
        self.catalog.manifest(config.pool_id)  # NOT_FOUND for an unknown pool
        ray.get(self.coordinator.start.remote(config))
        return self._loop(config.loop_id)

    @_unary(pb.Loop)
    def GetLoop(self, request: pb.GetLoopRequest) -> pb.Loop:  # noqa: N802
        return self._loop(request.loop_id)

    def _loop(self, loop_id: str) -> pb.Loop:
        """Read from the store, so it answers while the coordinator restarts."""
        record = self.loops.load(loop_id)
        num_labeled = len(self.labels.labels(record.config.pool_id))
        return loop_to_proto(record, self.loops.rounds(loop_id), num_labeled, self.loops)

    # --- latent space -------------------------------------------------------------------
    @_unary(pb.Neighbours)
    def GetNeighbours(self, request: pb.GetNeighboursRequest) -> pb.Neighbours:  # noqa: N802
        if not 1 <= request.k <= MAX_NEIGHBOURS:
            raise InvalidArgumentError(f"k must be 1 to {MAX_NEIGHBOURS}, got {request.k}")
        record = self._finished(request.round_id)
        (index,) = self.catalog.indices_of(record.pool_id, [request.sample_id])
        shards = self._shard_indexes(record)
        starts = [s.start for s in self.catalog.manifest(record.pool_id).shards]
        owner = shards[int(np.searchsorted(starts, index, side="right")) - 1]
        query = owner.reconstruct(int(index))[None]
        found: list[tuple[float, int]] = []
        for shard in shards:
            distances, ids = shard.search(query, min(request.k + 1, shard.ntotal))
            found += [(float(d), int(i)) for d, i in zip(distances[0], ids[0], strict=True)]
        nearest = sorted((d, i) for d, i in found if i != index)[: request.k]
        pool_ids = self.catalog.ids(record.pool_id)
        return pb.Neighbours(
            neighbours=[pb.Neighbour(sample_id=str(pool_ids[i]), distance=d) for d, i in nearest]
        )

    def _shard_indexes(self, record: RoundRecord) -> list[faiss.IndexIDMap2]:
        if record.round_id not in self._indexes:
            results = self.rounds.results(record)
            self._indexes[record.round_id] = [results.index(n) for n in sorted(results.done())]
            if len(self._indexes) > 2:
                self._indexes.popitem(last=False)
        return self._indexes[record.round_id]


def _round(record: RoundRecord) -> pb.Round:
    return pb.Round(
        round_id=record.round_id,
        pool_id=record.pool_id,
        model_id=record.model_id,
        sampler_model_id=record.sampler_model_id,
        state=_STATE[record.state],
        shards_done=record.shards_done,
        shards_total=record.shards_total,
        num_labeled=record.num_labeled,
        num_candidates=record.num_candidates,
        message=record.message,
        strategies=list(record.strategies),
        stage_seconds=record.seconds,
    )


def _missing_strategy(strategy: str, record: RoundRecord) -> str:
    if strategy in ("mvaal", "vaal", "hybrid"):
        if not record.sampler_model_id:
            return f"{strategy} needs a sampler: start the round with sampler_model_id"
        answered = [s for s in record.strategies if s in ("mvaal", "vaal")]
        return f"this round's sampler answers {answered}, not {strategy}"
    return (
        f"{strategy} is not available for this round (it needs at least two labeled samples "
        f"whose node weights differ); available: {list(record.strategies)}"
    )
