"""One round's retraining, shared by the demo and the loop coordinator: the task model on the
labeled set with Ray Train, the map autoencoder on its saliency maps, optionally a VAAL sampler
with Ray Train, and both published as the round's versioned models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from gestalt_al.data import ImageSet, PairedImageSet
from gestalt_al.distributed.epochs import RayRun
from gestalt_al.distributed.mvaal import train_mvaal_ray
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.distributed.task_model import DistributedTrainResult, train_task_model_ray
from gestalt_al.latents import AutoencoderConfig
from gestalt_al.models import ModelConfig
from gestalt_al.models.config import Arch, Task
from gestalt_al.mvaal import MVAALConfig
from gestalt_al.saliency import Method
from gestalt_al.service.loop_config import ModelSettings
from gestalt_al.service.models import GestaltModel, SamplerModel
from gestalt_al.training import TrainConfig


@dataclass(frozen=True)
class RoundData:
    """A round's sets: ``labeled`` (with labels) trains the task model and, with
    ``unlabeled`` (None when no sampler is trained), the sampler; ``validation`` picks the
    best epoch."""

    labeled: ImageSet
    unlabeled: ImageSet | None
    validation: ImageSet


@dataclass(frozen=True)
class Retrained:
    model_id: str  # the published GESTALT entry (task model + map autoencoder)
    sampler_id: str  # "" when no sampler was trained
    config: ModelConfig
    task: DistributedTrainResult  # the best-validation model and the Ray Train history


def retrain_and_publish(
    data: RoundData,
    settings: ModelSettings,
    registry: ModelRegistry,
    publish_round: int,
    runs: str,
    run_name: str,
    seed: int,
    with_sampler: bool = True,
) -> Retrained:
    """Train and publish under ``publish_round``. Ray Train checkpoints go to ``runs`` (a
    folder or ``s3://``) as ``<run_name>-task`` and ``<run_name>-sampler``: calling again with
    the same names resumes an interrupted run, or returns a finished one's result."""
    labeled = data.labeled
    assert labeled.labels is not None
    assert data.validation.labels is not None
    size = settings.image_size or int(labeled.images.shape[-1])
    task: Task = "multi_label" if labeled.multi_label else "multi_class"
    arch = cast(Arch, settings.arch)  # ModelSettings checked it
    config = ModelConfig(arch, labeled.num_classes, task, image_size=size)
    trained = train_task_model_ray(
        config, labeled.images, labeled.labels, data.validation.images, data.validation.labels,
        TrainConfig(max_epochs=settings.epochs, seed=seed), _run(settings, runs, run_name, "task"),
    )  # fmt: skip
    gestalt = GestaltModel.fit(
        trained.model, config, labeled.images, cast(Method, settings.saliency),
        AutoencoderConfig(settings.latent_dim, settings.autoencoder_epochs, seed=seed),
        progress=False,
    )  # fmt: skip
    model_id = gestalt.publish(registry, publish_round)
    sampler_id = ""
    if with_sampler and settings.with_sampler:
        if data.unlabeled is None:
            raise ValueError("training a sampler needs the unlabeled set")
        sampler_config = MVAALConfig(
            image_size=size, aux_channels=0, width=settings.sampler_width,
            latent_dim=settings.latent_dim,
        )  # fmt: skip
        sampler = train_mvaal_ray(
            sampler_config, PairedImageSet(labeled, None), PairedImageSet(data.unlabeled, None),
            settings.sampler_epochs, _run(settings, runs, run_name, "sampler"), seed,
        ).models  # fmt: skip
        sampler_id = SamplerModel(sampler_config, sampler.vae, sampler.discriminator).publish(
            registry, publish_round
        )
    return Retrained(model_id, sampler_id, config, trained)


def _run(settings: ModelSettings, runs: str, run_name: str, job: str) -> RayRun:
    return RayRun(
        f"{run_name}-{job}", runs, num_workers=settings.workers, use_gpu=settings.use_gpu,
        cpus_per_worker=settings.cpus_per_worker or None,
    )  # fmt: skip
