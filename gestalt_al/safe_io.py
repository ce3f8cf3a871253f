"""Model files without pickle: plain config values and tensors, loaded ``weights_only``."""

from __future__ import annotations

from pathlib import Path

import torch


def save_state(
    path: str | Path, config: dict[str, str | int], state: dict[str, torch.Tensor]
) -> None:
    tensors = {name: tensor.detach().cpu() for name, tensor in state.items()}
    torch.save({"config": config, "state_dict": tensors}, Path(path))


def load_state(path: str | Path) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """The config and tensors of a ``save_state`` file; anything else is a ValueError."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: not a gestalt-al model file ({exc})") from exc
    if not isinstance(payload, dict) or set(payload) != {"config", "state_dict"}:
        raise ValueError(f"{path}: expected exactly the keys 'config' and 'state_dict'")
    config, state = payload["config"], payload["state_dict"]
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ValueError(f"{path}: 'config' and 'state_dict' must be mappings")
    return config, state
