"""Loop configs and states between their gRPC messages and the service's dataclasses.

Proto3 cannot tell an unset field from a zero, so a zero or empty field means the
dataclass default (the proto documents each default).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from gestalt_al.service.loop_config import LoopConfig, ModelSettings
from gestalt_al.service.loops import LoopBook, LoopRecord, LoopRound
from gestalt_al.v1 import active_learning_pb2 as pb

_STATE = {
    "initial_labels": pb.LOOP_STATE_INITIAL_LABELS,
    "running": pb.LOOP_STATE_RUNNING,
    "finished": pb.LOOP_STATE_FINISHED,
    "failed": pb.LOOP_STATE_FAILED,
}
_STAGE = {
    "training": pb.LOOP_STAGE_TRAINING,
    "scoring": pb.LOOP_STAGE_SCORING,
    "awaiting_labels": pb.LOOP_STAGE_AWAITING_LABELS,
    "done": pb.LOOP_STAGE_DONE,
}


def _set_fields(message: Any, kind: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    names = [f.name for f in fields(kind) if f.name not in skip]
    return {name: getattr(message, name) for name in names if getattr(message, name)}


def loop_config_from_proto(message: pb.LoopConfig) -> LoopConfig:
    """Raises ``InvalidArgumentError`` for a config that cannot run."""
    given = _set_fields(message, LoopConfig, skip=("pool_id", "data", "model"))
    model = ModelSettings(**_set_fields(message.model, ModelSettings))
    return LoopConfig(pool_id=message.pool_id, data=message.data, model=model, **given)


def loop_config_to_proto(config: LoopConfig) -> pb.LoopConfig:
    values = {k: v for k, v in asdict(config).items() if k != "model"}
    return pb.LoopConfig(**values, model=pb.ModelSettings(**asdict(config.model)))


def loop_to_proto(
    record: LoopRecord, rounds: list[LoopRound], num_labeled: int, book: LoopBook
) -> pb.Loop:
    current = next((r for r in rounds if r.round == record.round), None)
    if record.state == "initial_labels":
        waiting, uri = record.initial, book.query_uri(record.loop_id, None)
    elif current is not None and current.stage == "awaiting_labels":
        waiting, uri = current.queries, book.query_uri(record.loop_id, current.round)
    else:
        waiting, uri = (), ""
    return pb.Loop(
        loop_id=record.loop_id,
        config=loop_config_to_proto(record.config),
        state=_STATE[record.state],
        round=record.round,
        stage=_STAGE[current.stage] if current is not None else pb.LOOP_STAGE_UNSPECIFIED,
        num_labeled=num_labeled,
        rounds=[_round(r, book.query_uri(record.loop_id, r.round)) for r in rounds],
        query_ids=[q.sample_id for q in waiting],
        query_uri=uri if waiting else "",
        stop_reason=record.stop_reason,
        message=record.message,
    )


def _round(state: LoopRound, query_uri: str) -> pb.LoopRound:
    message = pb.LoopRound(
        round=state.round,
        stage=_STAGE[state.stage],
        final=state.final,
        num_labeled=state.num_labeled,
        model_id=state.model_id,
        sampler_model_id=state.sampler_model_id,
        service_round_id=state.service_round_id,
        num_queried=len(state.queries),
        num_query_labeled=state.num_query_labeled,
        query_uri=query_uri if state.queries else "",
    )
    for split, field in (("val", "val_macro_auc"), ("test", "test_macro_auc")):
        scores = state.metrics.get(split)
        if isinstance(scores, dict):
            setattr(message, field, float(scores["macro_auc"]))
    return message
