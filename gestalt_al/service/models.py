"""The two model versions a round scores with, as published registry entries.

``gestalt``: the task model and the map autoencoder fitted on its saliency maps, in one entry,
because latents from one model's maps and another's autoencoder mean nothing. ``sampler``: the
M-VAAL (or VAAL) VAE and discriminator. Both load without pickle (``safe_io``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TypeVar

import numpy as np
import torch

from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.latents import AutoencoderConfig, SaliencyLatentEncoder
from gestalt_al.latents.map_autoencoder import autoencoder_config, autoencoder_from_state
from gestalt_al.models import ModelConfig, as_model_input, probabilities, unit_images
from gestalt_al.models.weights import model_from_state
from gestalt_al.mvaal import MVAALConfig, discriminator_scores
from gestalt_al.mvaal.networks import Discriminator, MultimodalVAE
from gestalt_al.safe_io import Config
from gestalt_al.saliency import Method, canonize
from gestalt_al.service.errors import InvalidArgumentError, NotFoundError
from gestalt_al.strategies.confidence import class_distributions, entropy

GESTALT_KIND = "gestalt"
SAMPLER_KIND = "sampler"
Value = TypeVar("Value")


def _part(entries: dict[str, Value], part: str) -> dict[str, Value]:
    """The entries of one bundled part (``model.x`` -> ``x``)."""
    prefix = f"{part}."
    return {k.removeprefix(prefix): v for k, v in entries.items() if k.startswith(prefix)}


def _bundle(parts: dict[str, dict[str, Value]]) -> dict[str, Value]:
    return {f"{part}.{k}": v for part, entries in parts.items() for k, v in entries.items()}


def fetch(registry: ModelRegistry, model_id: str, kind: str) -> tuple[
    dict[str, object], dict[str, torch.Tensor]
]:  # fmt: skip
    """A published entry of ``kind``; unknown or malformed ids are client errors."""
    if not model_id.startswith(f"{kind}-"):
        raise InvalidArgumentError(f"{model_id!r} is not a {kind} model id ('{kind}-r0001-...')")
    try:
        return registry.fetch(model_id)
    except LookupError as exc:
        raise NotFoundError(str(exc)) from exc


@dataclass
class GestaltModel:
    """A round's task model with its latent encoder: images -> latents and probabilities."""

    config: ModelConfig
    encoder: SaliencyLatentEncoder
    task_state: dict[str, torch.Tensor]

    def publish(self, registry: ModelRegistry, round_number: int) -> str:
        autoencoder = self.encoder.autoencoder
        ae_config = autoencoder_config(autoencoder, self.encoder.method)
        config: Config = {
            **{f"model.{k}": v for k, v in self.config.to_dict().items()},
            **{f"autoencoder.{k}": v for k, v in ae_config.items()},
        }
        state = _bundle({"model": self.task_state, "autoencoder": autoencoder.state_dict()})
        return registry.publish(GESTALT_KIND, round_number, config, state)

    @classmethod
    def fit(
        cls,
        model: torch.nn.Module,
        config: ModelConfig,
        labeled_images: np.ndarray,
        method: Method = "deep_taylor",
        autoencoder: AutoencoderConfig | None = None,
        progress: bool = True,
    ) -> GestaltModel:
        """A trained task model plus the map autoencoder fitted on its labeled set's maps."""
        encoder, _ = SaliencyLatentEncoder.fit(
            model, as_model_input(labeled_images, config), method, autoencoder, progress=progress
        )
        return cls(config, encoder, model.state_dict())

    @classmethod
    def load(cls, registry: ModelRegistry, model_id: str) -> GestaltModel:
        config, state = fetch(registry, model_id, GESTALT_KIND)
        model, model_config = model_from_state(
            _part(config, "model"), _part(state, "model"), source=model_id
        )
        autoencoder, method = autoencoder_from_state(
            _part(config, "autoencoder"), _part(state, "autoencoder"), source=model_id
        )
        encoder = SaliencyLatentEncoder(canonize(model), method, autoencoder)
        return cls(model_config, encoder, model.state_dict())

    def to(self, device: torch.device) -> GestaltModel:
        self.encoder.net.to(device)
        self.encoder.autoencoder.to(device)
        return self

    def score(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``latents`` float32 ``[B, K, D]`` and ``uncertainty`` ``[B]``: the predictive
        entropy (mean binary entropy over classes when multi-label)."""
        batch = as_model_input(images, self.config)
        with torch.no_grad():
            device = next(self.encoder.net.parameters()).device
            logits = self.encoder.net(batch.to(device))
            probs = probabilities(logits, self.config).double().cpu().numpy()
        uncertainty = entropy(class_distributions(probs, self.config.task == "multi_label"))
        return {"latents": self.encoder.latents(batch, progress=False), "uncertainty": uncertainty}


@dataclass
class SamplerModel:
    """An M-VAAL / VAAL sampler: main-modality images -> discriminator scores."""

    config: MVAALConfig
    vae: MultimodalVAE
    discriminator: Discriminator

    @property
    def strategy(self) -> str:
        return "mvaal" if self.config.multimodal else "vaal"

    def publish(self, registry: ModelRegistry, round_number: int) -> str:
        state = _bundle(
            {"vae": self.vae.state_dict(), "discriminator": self.discriminator.state_dict()}
        )
        config: Config = asdict(self.config)
        return registry.publish(SAMPLER_KIND, round_number, config, state)

    @classmethod
    def load(cls, registry: ModelRegistry, model_id: str) -> SamplerModel:
        raw, state = fetch(registry, model_id, SAMPLER_KIND)
        names = {f.name for f in fields(MVAALConfig)}
        if set(raw) != names:
            raise ValueError(f"{model_id}: not an M-VAAL sampler config ({sorted(raw)})")
        config = MVAALConfig(**raw)  # type: ignore[arg-type]  # validated in __post_init__
        vae, discriminator = MultimodalVAE(config), Discriminator(config)
        try:
            vae.load_state_dict(_part(state, "vae"))
            discriminator.load_state_dict(_part(state, "discriminator"))
        except RuntimeError as exc:
            raise ValueError(f"{model_id}: weights do not fit its config ({exc})") from exc
        return cls(config, vae.eval(), discriminator.eval())

    def to(self, device: torch.device) -> SamplerModel:
        self.vae.to(device)
        self.discriminator.to(device)
        return self

    def score(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``sampler_scores`` float64 ``[B]``: D(z); lower = less like the labeled set."""
        main = unit_images(images, self.config.image_size, self.config.main_channels)
        scores = discriminator_scores(self.vae, self.discriminator, main, self.config.score_on_mean)
        return {"sampler_scores": scores}
