"""``DiscriminatorScores``: the M-VAAL / VAAL encoder and discriminator -> one score per
pool image (lower = less like the labeled set)."""

from __future__ import annotations

from ray import serve

from gestalt_al.service.models import SamplerModel
from services.scorer import BatchedScorer


@serve.deployment(name="DiscriminatorScores", max_ongoing_requests=32)
class DiscriminatorScores(BatchedScorer):
    name = "DiscriminatorScores"
    load = staticmethod(SamplerModel.load)
