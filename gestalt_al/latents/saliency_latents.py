"""Images -> per-class saliency maps -> latents ``[N, K, D]``: what GESTALT ranks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gestalt_al.latents.map_autoencoder import (
    AutoencoderConfig,
    MapAutoencoder,
    fit_map_autoencoder,
)
from gestalt_al.saliency import CanonicalNet, Method, canonize, class_saliency


def class_maps(
    net: CanonicalNet,
    images: torch.Tensor,
    method: Method,
    batch_size: int = 32,
    progress: bool = True,
) -> torch.Tensor:
    """All K class maps of every image, ``[N, K, H, W]`` float32 on the CPU, in batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(net.parameters()).device
    batches = torch.split(images, batch_size)
    maps = [
        class_saliency(net, batch.to(device), method).cpu()
        for batch in tqdm(batches, desc=f"{method} maps", unit="batch", disable=not progress)
    ]
    return torch.cat(maps)


@dataclass
class SaliencyLatentEncoder:
    """One model version's encoder: its canonical net, the map method and the autoencoder."""

    net: CanonicalNet
    method: Method
    autoencoder: MapAutoencoder
    batch_size: int = 32

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        labeled_images: torch.Tensor,
        method: Method = "deep_taylor",
        autoencoder: AutoencoderConfig | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> tuple[SaliencyLatentEncoder, torch.Tensor]:
        """Canonize the trained model and fit the autoencoder on the labeled set's maps;
        also returns those maps ``[M, K, H, W]`` so they need not be computed twice."""
        net = canonize(model)
        maps = class_maps(net, labeled_images, method, batch_size, progress)
        fitted, _ = fit_map_autoencoder(maps, autoencoder or AutoencoderConfig(), progress)
        return cls(net, method, fitted, batch_size), maps

    def maps(self, images: torch.Tensor, progress: bool = True) -> torch.Tensor:
        return class_maps(self.net, images, self.method, self.batch_size, progress)

    def latents(self, images: torch.Tensor, progress: bool = True) -> np.ndarray:
        """float32 ``[N, K, D]``, ready for ``gestalt_scores``."""
        return self.encode(self.maps(images, progress))

    def encode(self, maps: torch.Tensor) -> np.ndarray:
        return self.autoencoder.encode(maps).numpy()
