"""Saliency for all classes: canonical nets, batched maps equal Captum's, LRP conservation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from gestalt_al.models import ModelConfig
from gestalt_al.saliency import METHODS, canonize, class_saliency
from gestalt_al.saliency.captum_reference import (
    captum_deep_taylor,
    captum_grad_cam,
    captum_gradient,
)
from gestalt_al.saliency.deep_taylor import deep_taylor_relevance
from gestalt_al.saliency.rules import add_epsilon, propagate_leaf
from tests.saliency_nets import nih_images, trained_statistics_model

# (arch, image size, channels): both stems (small below 64 px) and both channel counts.
BACKBONES = [
    ("densenet121", 28, 1),
    ("densenet121", 64, 1),
    ("resnet18", 28, 3),
    ("resnet18", 64, 1),
    ("small_cnn", 28, 1),
    ("small_cnn", 64, 3),
]
CLASSES = [0, 2, 3]


def _net_and_images(arch: str, size: int, channels: int) -> tuple[nn.Module, torch.Tensor]:
    config = ModelConfig(arch, num_classes=4, in_channels=channels, image_size=size)  # type: ignore[arg-type]
    images = nih_images(size)[:2].expand(-1, channels, -1, -1).contiguous()
    return trained_statistics_model(config), images


@pytest.mark.parametrize(("arch", "size", "channels"), BACKBONES)
def test_canonical_net_computes_what_the_trained_model_computes(
    arch: str, size: int, channels: int
) -> None:
    model, images = _net_and_images(arch, size, channels)
    net = canonize(model)
    with torch.no_grad():
        expected, got = model(images), net(images)
    # Folding batch norm reorders float32 arithmetic: agreement to ~1e-6 of the logit scale.
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert not any(p.requires_grad for p in net.parameters())
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in net.modules())


@pytest.mark.parametrize(("arch", "size", "channels"), BACKBONES)
def test_batched_maps_equal_captum_per_class_calls(arch: str, size: int, channels: int) -> None:
    model, images = _net_and_images(arch, size, channels)
    net = canonize(model)
    classes = torch.tensor(CLASSES)
    pairs = [
        (deep_taylor_relevance(net, images, classes, 2), captum_deep_taylor(net, images, CLASSES)),
        (class_saliency(net, images, "grad_cam", CLASSES), captum_grad_cam(net, images, CLASSES)),
        (class_saliency(net, images, "gradient", CLASSES), captum_gradient(net, images, CLASSES)),
    ]
    for batched, naive in pairs:
        assert batched.shape == naive.shape
        scale = float(naive.detach().abs().max())
        assert scale > 0
        assert torch.allclose(batched, naive, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize(("arch", "size", "channels"), BACKBONES)
def test_deep_taylor_relevance_sums_to_each_class_logit(
    arch: str, size: int, channels: int
) -> None:
    """z+ passes on all of a neuron's relevance whenever its positive pre-activation
    sum_i x_i w_ij+ is > 0, which holds everywhere for strictly positive pixels (no black
    border). What remains is float32 rounding over ~120 layers: measured below 1e-6 of the
    logit, so 1e-4 relative (plus 1e-6 absolute for logits near 0) is a 100x margin."""
    model, _ = _net_and_images(arch, size, channels)
    net = canonize(model)
    generator = torch.Generator().manual_seed(1)
    images = 0.05 + 0.95 * torch.rand((3, channels, size, size), generator=generator)
    relevance = deep_taylor_relevance(net, images, torch.arange(4))
    with torch.no_grad():
        logits = net(images)
    totals = relevance.sum(dim=(2, 3, 4))
    assert torch.allclose(totals, logits, rtol=1e-4, atol=1e-6)


def test_zero_pixels_lose_only_relevance_of_bias_driven_neurons() -> None:
    """With black borders some neurons fire on their bias alone (sum x w+ = 0); z+ cannot
    pass their relevance on. The loss is bounded, not a blow-up: within 10% of the logit."""
    model, images = _net_and_images("resnet18", 64, 1)
    assert bool((images == 0).any())
    net = canonize(model)
    relevance = deep_taylor_relevance(net, images, torch.arange(4))
    with torch.no_grad():
        logits = net(images)
    assert torch.allclose(relevance.sum(dim=(2, 3, 4)), logits, rtol=0.1, atol=1e-3)


def test_class_subsets_and_passes_give_the_same_maps() -> None:
    model, images = _net_and_images("resnet18", 28, 1)
    net = canonize(model)
    for method in METHODS:
        full = class_saliency(net, images, method)
        assert full.shape == (2, 4, 28, 28)
        one_by_one = class_saliency(net, images, method, classes_per_pass=1)
        subset = class_saliency(net, images, method, classes=[3, 1])
        assert torch.allclose(one_by_one, full, rtol=1e-5, atol=1e-9)
        assert torch.allclose(subset, full[:, [3, 1]], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    ("images", "kwargs", "message"),
    [
        (-torch.ones(1, 1, 28, 28), {"method": "deep_taylor"}, "images >= 0"),
        (torch.full((1, 1, 28, 28), float("nan")), {}, "NaN"),
        (torch.ones(1, 3, 28, 28), {}, r"\[B, 1, H, W\]"),
        (torch.ones(1, 1, 28, 28), {"classes": [4]}, "0..3"),
        (torch.ones(1, 1, 28, 28), {"classes": []}, "non-empty"),
        (torch.ones(1, 1, 28, 28), {"method": "lime"}, "method must be"),
    ],
)
def test_bad_requests_are_refused(
    images: torch.Tensor, kwargs: dict[str, object], message: str
) -> None:
    model, _ = _net_and_images("resnet18", 28, 1)
    with pytest.raises(ValueError, match=message):
        class_saliency(canonize(model), images, **kwargs)  # type: ignore[arg-type]


def test_only_the_supported_backbones_can_be_canonized() -> None:
    with pytest.raises(TypeError, match="DenseNet, ResNet or SmallCNN expected"):
        canonize(nn.Sequential(nn.Conv2d(1, 2, 3)))


# Layer rules one at a time: relevance out of a layer equals relevance in, except what
# reaches outputs with a zero denominator (z+ with no positive contribution).


def _relevance_through(
    layer: nn.Module, x: torch.Tensor, relevance_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.ones_like(x, requires_grad=True)
    out, v_out = propagate_leaf(layer, x, v)
    (relevance_in,) = torch.autograd.grad(v_out, v, relevance_out)
    return out, relevance_in


def _z_plus_by_definition(
    conv: nn.Conv2d, x: torch.Tensor, relevance_out: torch.Tensor
) -> torch.Tensor:
    """R_i = x_i * sum_j w_ij+ R_j / z_j+ written with a plain conv2d and its gradient."""
    leaf = x.clone().requires_grad_(True)
    positive = nn.functional.conv2d(leaf, conv.weight.clamp(min=0), None, conv.stride, conv.padding)
    denominator = positive.detach() + torch.where(positive.detach() >= 0, 1e-9, -1e-9)
    (gradient,) = torch.autograd.grad(positive, leaf, relevance_out / denominator)
    return x * gradient


@given(
    seed=st.integers(0, 2**31 - 1),
    in_channels=st.integers(1, 6),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
)
def test_z_plus_conv_redistributes_by_definition_and_conserves(
    seed: int, in_channels: int, kernel: int, stride: int, padding: int
) -> None:
    """Covers both code paths: unfold + matmul (<= 3 input channels) and conv2d."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    conv = nn.Conv2d(in_channels, 5, kernel, stride, padding).requires_grad_(False)
    x = torch.rand((2, in_channels, 9, 9), generator=generator)
    x[x < 0.2] = 0.0  # some all-zero neighbourhoods, whose outputs have z+ = 0
    layer_out = conv(x)
    relevance_out = torch.randn(layer_out.shape, generator=generator)
    out, relevance_in = _relevance_through(conv, x, relevance_out)
    expected = _z_plus_by_definition(conv, x, relevance_out)
    assert torch.equal(out, layer_out)
    assert torch.allclose(relevance_in, expected, rtol=1e-5, atol=1e-6)
    positive = nn.functional.conv2d(x, conv.weight.clamp(min=0), None, stride, padding)
    passed_on = relevance_out[positive > 0].sum()
    assert torch.allclose(relevance_in.sum(), passed_on, rtol=1e-4, atol=1e-4)
    assert bool((relevance_in[x == 0] == 0).all())


@given(seed=st.integers(0, 2**31 - 1))
def test_weightless_layers_conserve_relevance(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = 0.01 + torch.rand((2, 3, 8, 8), generator=generator)
    for layer in (nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)):
        layer_out = layer(x)
        relevance_out = torch.randn(layer_out.shape, generator=generator)
        out, relevance_in = _relevance_through(layer, x, relevance_out)
        assert torch.equal(out, layer_out)
        assert torch.allclose(relevance_in.sum(), relevance_out.sum(), rtol=1e-4, atol=1e-5)
    # max pooling gives everything to the winner of each window
    winners = nn.MaxPool2d(2)
    out, relevance_in = _relevance_through(winners, x, torch.ones(2, 3, 4, 4))
    assert int((relevance_in != 0).sum()) == 2 * 3 * 4 * 4


@given(seed=st.integers(0, 2**31 - 1))
def test_residual_addition_splits_relevance_by_share(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    branch = torch.randn((2, 4, 3, 3), generator=generator)
    shortcut = 0.1 + torch.rand((2, 4, 3, 3), generator=generator) + branch.abs()  # sum > 0.1
    v_branch = torch.ones_like(branch, requires_grad=True)
    v_short = torch.ones_like(shortcut, requires_grad=True)
    out, v_out = add_epsilon(branch, v_branch, shortcut, v_short)
    relevance_out = torch.randn(out.shape, generator=generator)
    to_branch, to_short = torch.autograd.grad(v_out, (v_branch, v_short), relevance_out)
    assert torch.equal(out, branch + shortcut)
    assert torch.allclose(to_branch, relevance_out * branch / out, rtol=1e-5, atol=1e-6)
    assert torch.allclose(to_branch + to_short, relevance_out, rtol=1e-5, atol=1e-5)
