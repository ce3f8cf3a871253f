"""Model files without pickle: plain config values and tensors, loaded ``weights_only``."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import torch

Config = Mapping[str, str | int | float | bool]


def state_bytes(config: Config, state: dict[str, torch.Tensor]) -> bytes:
    tensors = {name: tensor.detach().cpu() for name, tensor in state.items()}
    buffer = io.BytesIO()
    torch.save({"config": config, "state_dict": tensors}, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes, source: str) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """The config and tensors of ``state_bytes`` output; anything else is a ValueError
    naming ``source`` (where the bytes came from)."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{source}: not a gestalt-al model file ({exc})") from exc
    if not isinstance(payload, dict) or set(payload) != {"config", "state_dict"}:
        raise ValueError(f"{source}: expected exactly the keys 'config' and 'state_dict'")
    config, state = payload["config"], payload["state_dict"]
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ValueError(f"{source}: 'config' and 'state_dict' must be mappings")
    return config, state


def save_state(path: str | Path, config: Config, state: dict[str, torch.Tensor]) -> None:
    Path(path).write_bytes(state_bytes(config, state))


def load_state(path: str | Path) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    return state_from_bytes(Path(path).read_bytes(), str(path))
