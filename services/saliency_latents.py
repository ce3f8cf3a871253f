"""``SaliencyLatents``: a round's task model -> per-class saliency latents ``[B, K, D]`` and
predictive entropy, for chunks of pool images."""

from __future__ import annotations

from ray import serve

from gestalt_al.service.models import GestaltModel
from services.scorer import BatchedScorer


@serve.deployment(name="SaliencyLatents", max_ongoing_requests=32)
class SaliencyLatents(BatchedScorer):
    name = "SaliencyLatents"
    load = staticmethod(GestaltModel.load)
