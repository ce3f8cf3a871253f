"""LRP rules per layer type, once for Captum (the per-class reference) and once batched.

The composite is Deep Taylor (Montavon et al. 2017): the z+ rule (Captum's Alpha1-Beta0 with
the bias left out) on every convolution and linear layer, whose inputs are all >= 0 here
(pixels in [0, 1] or ReLU outputs; the canonical nets guarantee it); Epsilon on layers without
weights (pooling, the residual addition), which is exact redistribution there; Identity on the
batch norms DenseNet applies right after a concatenation, which cannot be folded into a conv.

The batched form carries a relevance node ``v`` next to every activation ``x``. ``v`` has the
value 1 everywhere, and each rule builds ``v_out`` so that the vector-Jacobian product of
``v_out`` with respect to ``v`` is that rule's relevance redistribution. Backpropagating K
seeds through the one graph (``is_grads_batched``) then gives all K classes from one forward
pass, with the same arithmetic as Captum's hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.attr._utils.lrp_rules import (
    Alpha1_Beta0_Rule,
    EpsilonRule,
    IdentityRule,
    PropagationRule,
)
from torch import nn
from torch.nn import functional

# Captum's stabiliser: z + 1e-9 * sign(z), with sign(0) = +1.
STABILITY = 1e-9
# Convolutions reading at most this many channels (the image) run as unfold + matmul.
FEW_CHANNELS = 3

Propagate = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Add(nn.Module):
    """The residual ``+`` as a module, so Captum hooks it and LRP splits relevance over it."""

    def forward(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return branch + shortcut


def stabilise(z: torch.Tensor) -> torch.Tensor:
    return z + torch.where(z >= 0, STABILITY, -STABILITY)


def _as_relevance_node(ratio: torch.Tensor) -> torch.Tensor:
    """Value exactly 1 (so ``v * x == x`` downstream), gradient that of ``ratio``."""
    return ratio - ratio.detach() + 1.0


def _z_plus(
    module: nn.Module, x: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    assert isinstance(module, nn.Conv2d | nn.Linear)
    positive = module.weight.clamp(min=0)
    if isinstance(module, nn.Conv2d) and module.in_channels <= FEW_CHANNELS:
        numerator = _conv_as_matmul(module, positive, v * x)
    elif isinstance(module, nn.Conv2d):
        numerator = functional.conv2d(
            v * x, positive, None, module.stride, module.padding, module.dilation, module.groups
        )
    else:
        numerator = functional.linear(v * x, positive)
    return module(x), _as_relevance_node(numerator / stabilise(numerator.detach()))


def _conv_as_matmul(module: nn.Conv2d, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A conv on an image with 1-3 channels as unfold + matmul.

    oneDNN's backward-data kernel for so few input channels is ~20x slower than the matmul
    and fold autograd uses here, and the first layer's backward runs once per class.
    """
    assert module.groups == 1
    assert isinstance(module.padding, tuple)
    columns = functional.unfold(
        x, module.kernel_size, module.dilation, module.padding, module.stride
    )  # [B, C*kh*kw, L]
    out = weight.flatten(1) @ columns  # [B, C_out, L]
    height, width = (
        (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
        for size, pad, dil, kernel, stride in zip(
            x.shape[-2:],
            module.padding,
            module.dilation,
            module.kernel_size,
            module.stride,
            strict=True,
        )
    )
    return out.view(*out.shape[:-1], height, width)


def _epsilon_pool(
    module: nn.Module, x: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    numerator = module(v * x)
    out = numerator.detach()
    return out, _as_relevance_node(numerator / stabilise(out))


def _epsilon_max_pool(
    module: nn.Module, x: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    assert isinstance(module, nn.MaxPool2d)
    out, winners = functional.max_pool2d(
        x,
        module.kernel_size,
        module.stride,
        module.padding,
        module.dilation,
        ceil_mode=module.ceil_mode,
        return_indices=True,
    )
    # Relevance goes to the pixel that won the max, as autograd routes Captum's gradient.
    numerator = (v * x).flatten(-2).gather(-1, winners.flatten(-2)).view_as(out)
    return out, _as_relevance_node(numerator / stabilise(out))


def _identity(
    module: nn.Module, x: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return module(x), v


def add_epsilon(
    branch: torch.Tensor, branch_v: torch.Tensor, shortcut: torch.Tensor, shortcut_v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Epsilon over ``branch + shortcut``: each side keeps its share of the sum."""
    numerator = branch_v * branch + shortcut_v * shortcut
    out = numerator.detach()
    return out, _as_relevance_node(numerator / stabilise(out))


def _captum_z_plus() -> PropagationRule:
    return Alpha1_Beta0_Rule(set_bias_to_zero=True)


# layer type -> (batched propagation, Captum rule factory); ReLU passes relevance unchanged.
LEAF_RULES: dict[type[nn.Module], tuple[Propagate, Callable[[], PropagationRule] | None]] = {
    nn.Conv2d: (_z_plus, _captum_z_plus),
    nn.Linear: (_z_plus, _captum_z_plus),
    nn.MaxPool2d: (_epsilon_max_pool, EpsilonRule),
    nn.AvgPool2d: (_epsilon_pool, EpsilonRule),
    nn.AdaptiveAvgPool2d: (_epsilon_pool, EpsilonRule),
    nn.BatchNorm2d: (_identity, IdentityRule),
    nn.ReLU: (_identity, None),
}
# Add has two inputs, so its batched rule is ``add_epsilon``, called by the residual block.
CAPTUM_RULES = {layer: factory for layer, (_, factory) in LEAF_RULES.items()} | {Add: EpsilonRule}


def propagate_leaf(
    module: nn.Module, x: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One leaf layer's activation and relevance node (see the module docstring)."""
    try:
        propagate, _ = LEAF_RULES[type(module)]
    except KeyError:
        raise TypeError(f"no LRP rule for layer type {type(module).__name__}") from None
    return propagate(module, x, v)


def attach_captum_rules(net: nn.Module) -> None:
    """Set ``module.rule`` on every leaf; Captum deletes them after each ``attribute`` call."""
    for module in net.modules():
        if next(module.children(), None) is not None:
            continue
        if type(module) not in CAPTUM_RULES:
            raise TypeError(f"no LRP rule for layer type {type(module).__name__}")
        factory = CAPTUM_RULES[type(module)]
        if factory is not None:
            module.rule = factory()
