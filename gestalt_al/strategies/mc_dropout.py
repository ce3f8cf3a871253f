"""MC dropout: T stochastic forward passes with dropout on (Gal & Ghahramani).

``variance`` is GESTALT TMI Eq. 9 (the spread of the sampled outputs, summed over classes; our
models predict no variance of their own, so the aleatoric term is 0). ``bald`` is the mutual
information between the prediction and the weights: entropy of the mean minus mean entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from gestalt_al.models import as_model_input, probabilities
from gestalt_al.strategies.confidence import class_distributions, entropy
from gestalt_al.strategies.context import QueryContext

Measure = Literal["variance", "bald"]
PASSES = 20  # T in the paper


def dropout_samples(
    context: QueryContext, passes: int = PASSES, batch_size: int = 256
) -> np.ndarray:
    """``[T, N, K]`` probabilities with only the dropout layers stochastic (batch norm stays
    in eval mode, as at test time), seeded by the round."""
    model = context.model
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if not dropouts or all(m.p == 0 for m in dropouts):
        raise ValueError(
            f"MC dropout needs dropout layers; {context.config.arch} has none (use small_cnn)"
        )
    device = torch.device(context.device)
    images = torch.as_tensor(context.pool.images)
    was_training = model.training
    model.eval()
    for layer in dropouts:
        layer.train()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            samples = [
                torch.cat(
                    [
                        probabilities(
                            model(as_model_input(chunk, context.config).to(device)), context.config
                        ).cpu()
                        for chunk in torch.split(images, batch_size)
                    ]
                )
                for _ in range(passes)
            ]
    finally:
        model.train(was_training)
    return torch.stack(samples).double().numpy()


@dataclass(frozen=True)
class MCDropout:
    measure: Measure = "variance"
    passes: int = PASSES

    @property
    def name(self) -> str:
        return "mc_dropout" if self.measure == "variance" else "bald"

    def scores(self, context: QueryContext) -> np.ndarray:
        samples = dropout_samples(context, self.passes)
        if self.measure == "variance":
            return np.asarray(samples.var(axis=0).sum(axis=1))
        multi_label = context.config.task == "multi_label"
        per_pass = [entropy(class_distributions(s, multi_label)) for s in samples]
        mean = entropy(class_distributions(samples.mean(axis=0), multi_label))
        return np.asarray(mean - np.mean(per_pass, axis=0))
