"""Save and load task models through ``safe_io`` (no pickle)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gestalt_al.models.backbones import build_model
from gestalt_al.models.config import ModelConfig
from gestalt_al.safe_io import load_state, save_state


def save_model(model: nn.Module, config: ModelConfig, path: str | Path) -> None:
    """One file with the config and the tensors, readable by ``load_model``."""
    save_state(path, config.to_dict(), model.state_dict())


def load_model(path: str | Path) -> tuple[nn.Module, ModelConfig]:
    """The model in eval mode and its config; refuses anything but tensors and plain data."""
    return model_from_state(*load_state(path), source=str(path))


def model_from_state(
    raw_config: dict[str, object], state: dict[str, torch.Tensor], source: str
) -> tuple[nn.Module, ModelConfig]:
    """Build the model a config describes and load its weights; ValueError if they differ."""
    config = ModelConfig.from_dict(raw_config)
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit a {config.arch} model ({exc})") from exc
    return model.eval(), config
