"""Task models: torchvision DenseNet-121 / ResNet-18 with a stem fitted to the input size, or
the small CNN that simulations retrain many times."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torchvision.models import densenet121, resnet18

from gestalt_al.models.config import ModelConfig
from gestalt_al.models.small_cnn import SmallCNN


def build_model(config: ModelConfig) -> nn.Module:
    """A randomly initialised backbone with K logits (no sigmoid/softmax: losses take logits)."""
    if config.arch == "small_cnn":
        return SmallCNN(config.in_channels, config.num_classes)
    if config.arch == "densenet121":
        dense = densenet121(weights=None, num_classes=config.num_classes)
        dense.features.conv0 = _stem_conv(config, out_channels=64)
        if config.small_stem:
            dense.features.pool0 = nn.Identity()
        return cast(nn.Module, dense)
    res = resnet18(weights=None, num_classes=config.num_classes)
    res.conv1 = _stem_conv(config, out_channels=64)
    if config.small_stem:
        res.maxpool = nn.Identity()
    return cast(nn.Module, res)


def _stem_conv(config: ModelConfig, out_channels: int) -> nn.Conv2d:
    if config.small_stem:
        conv = nn.Conv2d(config.in_channels, out_channels, 3, stride=1, padding=1, bias=False)
    else:
        conv = nn.Conv2d(config.in_channels, out_channels, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    return conv


def probabilities(logits: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Per-class probabilities: independent sigmoids (multi-label) or a softmax (multi-class)."""
    if config.task == "multi_label":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def task_loss(logits: torch.Tensor, targets: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """BCE on multi-hot targets [B, K] (multi-label) or CE on class indices [B] (multi-class)."""
    if config.task == "multi_label":
        return nn.functional.binary_cross_entropy_with_logits(logits, targets.float())
    return nn.functional.cross_entropy(logits, targets.long())
