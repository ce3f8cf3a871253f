"""Per-class latent vectors ``[N, K, D]`` that GESTALT builds its class graphs from."""

from gestalt_al.latents.map_autoencoder import (
    MAP_SIZE,
    AutoencoderConfig,
    MapAutoencoder,
    fit_map_autoencoder,
    load_autoencoder,
    normalise_maps,
    save_autoencoder,
)
from gestalt_al.latents.saliency_latents import SaliencyLatentEncoder, class_maps

__all__ = [
    "MAP_SIZE",
    "AutoencoderConfig",
    "MapAutoencoder",
    "SaliencyLatentEncoder",
    "class_maps",
    "fit_map_autoencoder",
    "load_autoencoder",
    "normalise_maps",
    "save_autoencoder",
]
