"""LRP-ready ("canonical") copies of the trained backbones, for explanation only.

Same function as the eval-mode torchvision model, rebuilt from explicit leaf modules so that
Captum's hooks and the batched rules see every operation that moves relevance: batch norm
folded into the conv before it, the residual ``+`` as an ``Add`` module, one ReLU module per
use (never in place), and DenseNet transitions as norm -> ReLU -> avg-pool -> 1x1 conv (pool and
1x1 conv commute exactly), so that every conv and linear layer sees inputs >= 0 and the z+ rule
applies. Batch norms after a concatenation stay and pass relevance unchanged (Identity rule).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.models import DenseNet, ResNet
from torchvision.models.densenet import _DenseBlock, _DenseLayer, _Transition
from torchvision.models.resnet import BasicBlock

from gestalt_al.models.small_cnn import SmallCNN
from gestalt_al.saliency.rules import Add, add_epsilon, propagate_leaf

Pair = tuple[torch.Tensor, torch.Tensor]


def _propagate(module: nn.Module, x: torch.Tensor, v: torch.Tensor) -> Pair:
    if isinstance(module, Relevant):
        return module.relevance(x, v)
    return propagate_leaf(module, x, v)


class Relevant(nn.Module):
    """A composite that knows how relevance flows through it (leaves use the rules table)."""

    def relevance(self, x: torch.Tensor, v: torch.Tensor) -> Pair:
        raise NotImplementedError


class Chain(nn.Sequential, Relevant):
    def relevance(self, x: torch.Tensor, v: torch.Tensor) -> Pair:
        for module in self:
            x, v = _propagate(module, x, v)
        return x, v


class DenseBlock(Relevant):
    """Each layer reads the concatenation of everything before it and appends its output."""

    def __init__(self, layers: list[Chain]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            # Captum hooks the tensor each module reads; a shared one would get two hooks.
            x = torch.cat([x, layer(x.clone() if torch.is_grad_enabled() else x)], dim=1)
        return x

    def relevance(self, x: torch.Tensor, v: torch.Tensor) -> Pair:
        for layer in self.layers:
            new_x, new_v = _propagate(layer, x, v)
            x, v = torch.cat([x, new_x], dim=1), torch.cat([v, new_v], dim=1)
        return x, v


class ResidualBlock(Relevant):
    def __init__(self, branch: Chain, shortcut: nn.Conv2d | None) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.add = Add()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out: torch.Tensor = self.relu(self.add(self.branch(x), shortcut))
        return out

    def relevance(self, x: torch.Tensor, v: torch.Tensor) -> Pair:
        branch_x, branch_v = self.branch.relevance(x, v)
        short_x, short_v = (x, v) if self.shortcut is None else _propagate(self.shortcut, x, v)
        return _propagate(self.relu, *add_epsilon(branch_x, branch_v, short_x, short_v))


class Head(Relevant):
    """Global average pool and the linear classifier: K logits from the last feature map."""

    def __init__(self, classifier: nn.Linear) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(torch.flatten(self.pool(x), 1))
        return logits

    def relevance(self, x: torch.Tensor, v: torch.Tensor) -> Pair:
        x, v = _propagate(self.pool, x, v)
        return _propagate(self.classifier, torch.flatten(x, 1), torch.flatten(v, 1))


class CanonicalNet(Relevant):
    """``features`` ends in a ReLU module (Grad-CAM's layer); ``head`` maps it to K logits."""

    def __init__(self, features: Chain, head: Head) -> None:
        super().__init__()
        self.features = features
        self.head = head

    @property
    def feature_layer(self) -> nn.Module:
        return self.features[-1]

    @property
    def in_channels(self) -> int:
        stem = self.features[0]
        assert isinstance(stem, nn.Conv2d)
        return stem.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits

    def relevance(self, x: torch.Tensor, v: torch.Tensor) -> Pair:
        return self.head.relevance(*self.features.relevance(x, v))


def canonize(model: nn.Module) -> CanonicalNet:
    """The LRP-ready, eval-mode, frozen equivalent of a trained DenseNet, ResNet or small CNN."""
    source = copy.deepcopy(model).eval()
    if isinstance(source, DenseNet):
        net = _canonize_densenet(source)
    elif isinstance(source, ResNet):
        net = _canonize_resnet(source)
    elif isinstance(source, SmallCNN):
        net = _canonize_small_cnn(source)
    else:
        raise TypeError(
            f"cannot canonize {type(model).__name__}: DenseNet, ResNet or SmallCNN expected"
        )
    return net.eval().requires_grad_(False)


def fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """The conv whose output equals ``norm(conv(x))`` in eval mode."""
    assert norm.running_var is not None
    assert norm.running_mean is not None
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = torch.zeros_like(scale) if conv.bias is None else conv.bias
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        conv.groups,
        bias=True,
    )
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale[:, None, None, None])
        folded.bias.copy_((bias - norm.running_mean) * scale + norm.bias)  # type: ignore[union-attr]
    return folded


def _stem(conv: nn.Module, norm: nn.Module, pool: nn.Module) -> list[nn.Module]:
    assert isinstance(conv, nn.Conv2d)
    assert isinstance(norm, nn.BatchNorm2d)
    layers: list[nn.Module] = [fold_batch_norm(conv, norm), nn.ReLU()]
    if isinstance(pool, nn.MaxPool2d):
        layers.append(pool)
    return layers


def _canonize_densenet(model: DenseNet) -> CanonicalNet:
    parts = dict(model.features.named_children())
    layers = _stem(parts["conv0"], parts["norm0"], parts["pool0"])
    for name, part in parts.items():
        if isinstance(part, _DenseBlock):
            layers.append(DenseBlock([_dense_layer(layer) for layer in part.values()]))
        elif isinstance(part, _Transition):
            conv, pool = part.conv, part.pool
            assert isinstance(conv, nn.Conv2d)
            assert isinstance(pool, nn.AvgPool2d)
            layers += [part.norm, nn.ReLU(), pool, conv]
        elif name == "norm5":
            layers += [part, nn.ReLU()]
    assert isinstance(model.classifier, nn.Linear)
    return CanonicalNet(Chain(*layers), Head(model.classifier))


def _dense_layer(layer: nn.Module) -> Chain:
    assert isinstance(layer, _DenseLayer)
    assert isinstance(layer.conv1, nn.Conv2d)
    assert isinstance(layer.norm2, nn.BatchNorm2d)
    return Chain(
        layer.norm1, nn.ReLU(), fold_batch_norm(layer.conv1, layer.norm2), nn.ReLU(), layer.conv2
    )


def _canonize_resnet(model: ResNet) -> CanonicalNet:
    layers = _stem(model.conv1, model.bn1, model.maxpool)
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            assert isinstance(block, BasicBlock)
            branch = Chain(
                fold_batch_norm(block.conv1, block.bn1),
                nn.ReLU(),
                fold_batch_norm(block.conv2, block.bn2),
            )
            shortcut = None
            if block.downsample is not None:
                conv, norm = block.downsample
                assert isinstance(conv, nn.Conv2d)
                assert isinstance(norm, nn.BatchNorm2d)
                shortcut = fold_batch_norm(conv, norm)
            layers.append(ResidualBlock(branch, shortcut))
    return CanonicalNet(Chain(*layers), Head(model.fc))


def _canonize_small_cnn(model: SmallCNN) -> CanonicalNet:
    """Each conv with its batch norm folded in; dropout is the identity in eval mode."""
    parts = list(model.features)
    layers: list[nn.Module] = []
    for previous, part in zip([None, *parts], parts, strict=False):
        if isinstance(part, nn.BatchNorm2d):
            assert isinstance(previous, nn.Conv2d)
            layers[-1] = fold_batch_norm(previous, part)
        elif isinstance(part, nn.ReLU):
            layers.append(nn.ReLU())
        elif not isinstance(part, nn.Dropout):
            layers.append(part)
    return CanonicalNet(Chain(*layers), Head(model.classifier))
