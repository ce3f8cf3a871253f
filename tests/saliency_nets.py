"""Small fixtures for the saliency tests: backbones with realistic batch-norm statistics."""

from __future__ import annotations

import functools

import torch
from torch import nn

from gestalt_al.data import bundled_nih_path, load_dataset
from gestalt_al.models import ModelConfig, as_model_input, build_model


@functools.cache
def nih_images(size: int, count: int = 48) -> torch.Tensor:
    """Real chest X-rays (bundled sample) as model input; they have black (zero) borders."""
    images = load_dataset(bundled_nih_path(), "train", "images_64").images[:count]
    return as_model_input(images, ModelConfig("resnet18", 2, image_size=size))


def trained_statistics_model(config: ModelConfig, seed: int = 0) -> nn.Module:
    """A backbone whose batch norms hold running statistics of real images (not 0 / 1),
    so that folding them into convolutions is actually exercised."""
    torch.manual_seed(seed)
    model = build_model(config).train()
    images = nih_images(config.image_size)
    if config.in_channels == 3:
        images = images.expand(-1, 3, -1, -1)
    with torch.no_grad():
        for batch in torch.split(images, 16):
            model(batch)
    return model.eval()
