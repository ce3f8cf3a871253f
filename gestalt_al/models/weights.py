"""Save and load task models without pickle: a state dict loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gestalt_al.models.backbones import build_model
from gestalt_al.models.config import ModelConfig


def save_model(model: nn.Module, config: ModelConfig, path: str | Path) -> None:
    """One file with the config (plain str/int) and the tensors, readable by ``load_model``."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    torch.save({"config": config.to_dict(), "state_dict": state}, Path(path))


def load_model(path: str | Path) -> tuple[nn.Module, ModelConfig]:
    """The model in eval mode and its config; refuses anything but tensors and plain data."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: not a gestalt-al model file ({exc})") from exc
    if not isinstance(payload, dict) or set(payload) != {"config", "state_dict"}:
        raise ValueError(f"{path}: expected keys 'config' and 'state_dict'")
    config = ModelConfig.from_dict(payload["config"])
    model = build_model(config)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), config
