"""Backpropagate one seed per class through a single forward graph."""

from __future__ import annotations

import torch

# On CPU, batching more than a few seeds per backward pass (``is_grads_batched``) is slower
# than a few passes (measured: 14 classes, batch 32, 64 px); a GPU takes all classes at once.
CPU_CLASSES_PER_PASS = 4


def one_hot_seeds(logits: torch.Tensor, classes: torch.Tensor, times_logit: bool) -> torch.Tensor:
    """``[K, B, num_classes]``: seed k selects class ``classes[k]`` (scaled by its logit)."""
    seeds = torch.zeros((len(classes), *logits.shape), dtype=logits.dtype, device=logits.device)
    rows = torch.arange(len(classes), device=logits.device)
    picked = logits.detach()[:, classes].T if times_logit else 1.0
    seeds[rows, :, classes] = picked
    return seeds


def per_class_vjp(
    output: torch.Tensor,
    wrt: torch.Tensor,
    seeds: torch.Tensor,
    classes_per_pass: int | None = None,
) -> torch.Tensor:
    """``[K, *wrt.shape]``: the vector-Jacobian product of ``output`` for each seed."""
    if classes_per_pass is None:
        classes_per_pass = len(seeds) if output.is_cuda else CPU_CLASSES_PER_PASS
    if classes_per_pass < 1:
        raise ValueError(f"classes_per_pass must be >= 1, got {classes_per_pass}")
    parts = []
    for start in range(0, len(seeds), classes_per_pass):
        chunk = seeds[start : start + classes_per_pass]
        last = start + classes_per_pass >= len(seeds)
        (part,) = torch.autograd.grad(
            output, wrt, grad_outputs=chunk, is_grads_batched=True, retain_graph=not last
        )
        parts.append(part)
    return torch.cat(parts)
