"""Versioned model ids: one immutable model per kind and round, digest-checked on fetch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.models import ModelConfig, build_model
from gestalt_al.models.weights import model_from_state

CONFIG = ModelConfig("resnet18", 3, image_size=28)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(CONFIG)


def test_publish_fetch_round_trip_and_idempotence(tmp_path: Path) -> None:
    registry = ModelRegistry(str(tmp_path))
    first = registry.publish("task", 0, CONFIG.to_dict(), _model(0).state_dict())
    assert re.fullmatch(r"task-r0000-[0-9a-f]{12}", first)
    assert registry.publish("task", 0, CONFIG.to_dict(), _model(0).state_dict()) == first
    second = registry.publish("task", 1, CONFIG.to_dict(), _model(1).state_dict())
    assert re.fullmatch(r"task-r0001-[0-9a-f]{12}", second)
    assert registry.ids("task") == [first, second]
    assert registry.for_round("task", 1) == second
    model, config = model_from_state(*registry.fetch(second), source=second)
    assert config == CONFIG
    for name, tensor in _model(1).state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)
    assert not list(Path(tmp_path, "models").glob(".staging-*"))


def test_a_rounds_model_never_changes(tmp_path: Path) -> None:
    registry = ModelRegistry(str(tmp_path))
    kept = registry.publish("task", 2, CONFIG.to_dict(), _model(0).state_dict())
    with pytest.raises(FileExistsError, match=f"round 2 already has the task model {kept}"):
        registry.publish("task", 2, CONFIG.to_dict(), _model(1).state_dict())
    assert registry.ids("task", 2) == [kept]


def test_unknown_malformed_and_altered_ids_are_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(str(tmp_path))
    model_id = registry.publish("task", 0, CONFIG.to_dict(), _model(0).state_dict())
    with pytest.raises(LookupError, match="no model 'task-r0000-000000000000'"):
        registry.fetch("task-r0000-000000000000")
    with pytest.raises(LookupError, match="no task model was published for round 7"):
        registry.for_round("task", 7)
    for bad in ("../task-r0000-aaaaaaaaaaaa", "task-r0000-AAAAAAAAAAAA", "task-r0-abc"):
        with pytest.raises(ValueError, match="is not a model id"):
            registry.fetch(bad)
    with pytest.raises(ValueError, match="need a lowercase kind"):
        registry.publish("Task/..", 0, CONFIG.to_dict(), _model(0).state_dict())
    stored = Path(tmp_path, "models", f"{model_id}.pt")
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="do not match the id"):
        registry.fetch(model_id)
