"""Per-class latent vectors ``[N, K, D]`` that GESTALT builds its class graphs from."""

from gestalt_al.latents.random_projection import random_projection_latents

__all__ = ["random_projection_latents"]
