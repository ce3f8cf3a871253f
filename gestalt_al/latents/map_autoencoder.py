"""Saliency maps -> D-dimensional latents with a small convolutional autoencoder.

IDEAL and GESTALT encode saliency maps into latent vectors; the autoencoder is trained on the
maps of the labeled set (all K classes share one encoder, so class latents live in one space
and their cosine similarities compare like with like). Each map is resized to ``MAP_SIZE``
and divided by its largest absolute value first: LRP maps scale with the logit, and the
graph should compare where the evidence lies, not how large the logit is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional
from tqdm import tqdm

from gestalt_al.safe_io import load_state, save_state
from gestalt_al.saliency import METHODS, Method

MAP_SIZE = 32
_CHANNELS = (16, 32, 64)
_BOTTLENECK = _CHANNELS[-1] * (MAP_SIZE // 8) ** 2


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """``[N, K, H, W]`` -> ``[N, K, MAP_SIZE, MAP_SIZE]``, each map scaled into [-1, 1]."""
    if maps.ndim != 4:
        raise ValueError(f"maps must be [N, K, H, W], got {tuple(maps.shape)}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("saliency maps contain NaN or infinite values")
    resized = functional.interpolate(
        maps.float(), size=(MAP_SIZE, MAP_SIZE), mode="bilinear", antialias=True
    )
    peak = resized.abs().amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, resized / peak.clamp(min=1e-30), resized)


class MapAutoencoder(nn.Module):
    def __init__(self, latent_dim: int = 64) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = latent_dim
        c1, c2, c3 = _CHANNELS
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(_BOTTLENECK, latent_dim),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, _BOTTLENECK), nn.ReLU(),
            nn.Unflatten(1, (c3, MAP_SIZE // 8, MAP_SIZE // 8)),
            nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, 2, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Reconstruction of normalised single maps ``[N, 1, S, S]``."""
        reconstruction: torch.Tensor = self.decoder(self.encoder(maps))
        return reconstruction

    def encode(self, maps: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Raw maps ``[N, K, H, W]`` -> float32 latents ``[N, K, D]``."""
        normalised = normalise_maps(maps)
        n, k = normalised.shape[:2]
        singles = normalised.reshape(n * k, 1, MAP_SIZE, MAP_SIZE)
        device = next(self.parameters()).device
        with torch.no_grad():
            latents = [
                self.encoder(chunk.to(device)).cpu() for chunk in torch.split(singles, batch_size)
            ]
        return torch.cat(latents).reshape(n, k, self.latent_dim)


@dataclass(frozen=True)
class AutoencoderConfig:
    latent_dim: int = 64
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("latent_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < float("inf"):
            raise ValueError(f"learning_rate must be positive and finite, got {self.learning_rate}")


def fit_map_autoencoder(
    maps: torch.Tensor, config: AutoencoderConfig = AutoencoderConfig(), progress: bool = True
) -> tuple[MapAutoencoder, list[float]]:
    """Train on every class map of ``maps`` ``[M, K, H, W]``; returns the model and the mean
    reconstruction MSE per epoch."""
    singles = normalise_maps(maps).reshape(-1, 1, MAP_SIZE, MAP_SIZE)
    if len(singles) < 2:
        raise ValueError("need at least 2 saliency maps to fit the autoencoder")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = MapAutoencoder(config.latent_dim)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    losses: list[float] = []
    epochs = tqdm(range(config.epochs), desc="map autoencoder", disable=not progress)
    for _ in epochs:
        total = 0.0
        shuffled = singles[torch.randperm(len(singles), generator=generator)]
        for batch in torch.split(shuffled, config.batch_size):
            loss = functional.mse_loss(model(batch), batch)
            optimiser.zero_grad()
            torch.autograd.backward(loss)
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(singles))
        epochs.set_postfix(mse=f"{losses[-1]:.4f}")
    return model.eval(), losses


def autoencoder_config(model: MapAutoencoder, method: Method) -> dict[str, str | int]:
    """``method`` names the saliency maps it was trained on; latents of other maps are noise."""
    return {"latent_dim": model.latent_dim, "map_size": MAP_SIZE, "method": method}


def save_autoencoder(model: MapAutoencoder, method: Method, path: str | Path) -> None:
    save_state(path, autoencoder_config(model, method), model.state_dict())


def load_autoencoder(path: str | Path) -> tuple[MapAutoencoder, Method]:
    """The autoencoder and the saliency method whose maps it encodes."""
    return autoencoder_from_state(*load_state(path), source=str(path))


def autoencoder_from_state(
    config: dict[str, object], state: dict[str, torch.Tensor], source: str
) -> tuple[MapAutoencoder, Method]:
    latent_dim, method = config.get("latent_dim"), config.get("method")
    methods: dict[object, Method] = {name: name for name in METHODS}
    if (
        config.get("map_size") != MAP_SIZE
        or not isinstance(latent_dim, int)
        or method not in methods
    ):
        raise ValueError(f"{source}: not a map autoencoder for {MAP_SIZE}px maps ({config})")
    model = MapAutoencoder(latent_dim)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit the map autoencoder ({exc})") from exc
    return model.eval(), methods[method]
