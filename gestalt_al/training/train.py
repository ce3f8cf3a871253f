"""Single-process training of a task model with the GESTALT paper's recipe.

``train_task_model`` is the whole loop; ``train_one_epoch`` and ``evaluate`` are its steps,
kept separate so a distributed wrapper (Ray Train) can drive the same code per worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gestalt_al.models import (
    ModelConfig,
    as_model_input,
    build_model,
    probabilities,
    task_loss,
)
from gestalt_al.training.augment import AugmentConfig, augment_batch
from gestalt_al.training.metrics import (
    ClassificationMetrics,
    LogValue,
    check_labels,
    classification_metrics,
    scorable_classes,
)

ImageInput = np.ndarray | torch.Tensor
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, batching, early stopping and augmentation (GESTALT TMI Sec. IV defaults).

    ``augment=None`` trains on the images as they are. ``device`` is checked against the
    machine only when training starts, so a config can be built where there is no GPU.
    """

    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.93, 0.999)
    batch_size: int = 16
    max_epochs: int = 50
    patience: int = 5
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ValueError(f"learning_rate must be finite and >= 0, got {self.learning_rate}")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("batch_size", "max_epochs", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}") from exc
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: 1-based index, mean training loss, validation metrics, wall time."""

    epoch: int
    train_loss: float
    val_metrics: ClassificationMetrics
    seconds: float

    def as_dict(self) -> dict[str, LogValue]:
        """Flat values for a metrics logger (validation keys prefixed ``val_``)."""
        flat: dict[str, LogValue] = {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "seconds": self.seconds,
        }
        flat.update({f"val_{key}": value for key, value in self.val_metrics.as_dict().items()})
        return flat


@dataclass(frozen=True)
class TrainResult:
    """The model in eval mode with its best-validation weights, and how it got there."""

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    best_metrics: ClassificationMetrics


def train_task_model(
    config: ModelConfig,
    train_images: ImageInput,
    train_labels: np.ndarray,
    val_images: ImageInput,
    val_labels: np.ndarray,
    train_config: TrainConfig | None = None,
    *,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train with Adam, keep the weights of the best validation macro ROC-AUC, stop early.

    Training stops after ``patience`` epochs without a strictly better validation AUC (or at
    ``max_epochs``); the returned model carries the best epoch's weights. The same seed and
    inputs give the same weights on the same machine.
    """
    settings = train_config or TrainConfig()
    device = _device(settings.device)
    train_x, train_y, val_x, val_y = checked_training_data(
        config, settings, train_images, train_labels, val_images, val_labels
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_model(config).to(device)
    optimizer = make_optimizer(model, settings)
    generator = torch.Generator().manual_seed(settings.seed)

    history: list[EpochRecord] = []
    best_state: StateDict = _copy_state(model)
    best_record: EpochRecord | None = None
    with (
        torch.random.fork_rng(devices=[]),  # dropout draws from the global generator
        tqdm(
            range(1, settings.max_epochs + 1), desc="train", unit="epoch", disable=not show_progress
        ) as bar,
    ):
        torch.manual_seed(settings.seed)
        for epoch in bar:
            start = time.perf_counter()
            loss = train_one_epoch(model, optimizer, train_x, train_y, config, settings, generator)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged in epoch {epoch} (mean loss {loss}); "
                    "lower the learning rate"
                )
            metrics = evaluate(model, val_x, val_y.numpy(), config, settings.eval_batch_size)
            record = EpochRecord(epoch, loss, metrics, time.perf_counter() - start)
            history.append(record)
            if best_record is None or metrics.macro_auc > best_record.val_metrics.macro_auc:
                best_record, best_state = record, _copy_state(model)
            bar.set_postfix(
                loss=f"{loss:.4f}",
                val_auc=f"{metrics.macro_auc:.4f}",
                best=f"{best_record.val_metrics.macro_auc:.4f}",
            )
            if on_epoch_end is not None:
                on_epoch_end(record)
            if epoch - best_record.epoch >= settings.patience:
                break
    assert best_record is not None  # max_epochs >= 1
    model.load_state_dict(best_state)
    return TrainResult(model.eval(), history, best_record.epoch, best_record.val_metrics)


def checked_training_data(
    config: ModelConfig,
    settings: TrainConfig,
    train_images: ImageInput,
    train_labels: np.ndarray,
    val_images: ImageInput,
    val_labels: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stored images and labels as tensors, after every check training relies on, so a bad
    set fails before any worker starts."""
    train_x = _checked_images(train_images, config, settings.eval_batch_size, "train_images")
    train_y = _checked_labels(train_labels, len(train_x), config, "train_labels")
    val_x = _checked_images(val_images, config, settings.eval_batch_size, "val_images")
    val_y = _checked_labels(val_labels, len(val_x), config, "val_labels")
    _require_scorable(val_y, config)
    return train_x, train_y, val_x, val_y


def make_optimizer(model: nn.Module, settings: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the configured learning rate and betas."""
    return torch.optim.Adam(model.parameters(), lr=settings.learning_rate, betas=settings.betas)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ModelConfig,
    settings: TrainConfig,
    generator: torch.Generator,
) -> float:
    """One shuffled pass in train mode; returns the sample-weighted mean loss.

    ``images`` are stored images (anything ``as_model_input`` takes, as a tensor) and are
    converted per batch, so a large set is never held as floats at model size. Shuffling
    and augmentation draw from the CPU ``generator``.
    """
    device = _model_device(model)
    model.train()
    order = torch.randperm(len(images), generator=generator)
    total = 0.0
    for batch in torch.split(order, settings.batch_size):
        inputs = as_model_input(images[batch].to(device), config)
        if settings.augment is not None:
            inputs = augment_batch(inputs, settings.augment, generator)
        loss = task_loss(model(inputs), labels[batch].to(device), config)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        total += float(loss.detach()) * len(batch)
    return total / len(images)


def predict_probabilities(
    model: nn.Module, images: ImageInput, config: ModelConfig, batch_size: int = 64
) -> np.ndarray:
    """[N, K] class probabilities in eval mode without gradients (the mode is restored).

    Raises FloatingPointError if the model outputs NaN or inf: that is diverged weights,
    not bad input, and would otherwise surface as a confusing metrics error.
    """
    stored = torch.as_tensor(images)
    if stored.ndim == 0 or len(stored) == 0:
        raise ValueError("images: the set is empty")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            chunks = [
                probabilities(model(as_model_input(chunk.to(device), config)), config).cpu()
                for chunk in torch.split(stored, batch_size)
            ]
    finally:
        model.train(was_training)
    probs = torch.cat(chunks)
    if not bool(torch.isfinite(probs).all()):
        raise FloatingPointError(
            "the model gives NaN or inf probabilities; its weights have diverged "
            "(lower the learning rate)"
        )
    return probs.numpy()


def evaluate(
    model: nn.Module,
    images: ImageInput,
    labels: np.ndarray,
    config: ModelConfig,
    batch_size: int = 64,
) -> ClassificationMetrics:
    """Metrics of the model's predictions on a labeled split (validation or test)."""
    return classification_metrics(
        predict_probabilities(model, images, config, batch_size), labels, config.task
    )


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here")
    return device


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _checked_images(
    images: ImageInput, config: ModelConfig, batch_size: int, name: str
) -> torch.Tensor:
    """The stored images as a tensor, after proving every batch converts to model input."""
    stored = torch.as_tensor(images)
    if stored.ndim == 0 or len(stored) == 0:
        raise ValueError(f"{name}: the set is empty")
    for chunk in torch.split(stored, batch_size):
        try:
            as_model_input(chunk, config)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    return stored


def _checked_labels(
    labels: np.ndarray, num_images: int, config: ModelConfig, name: str
) -> torch.Tensor:
    array = np.asarray(labels)
    if array.ndim == 0 or len(array) != num_images:
        raise ValueError(
            f"{name}: expected one label per image ({num_images}), got shape {list(array.shape)}"
        )
    return torch.from_numpy(check_labels(labels, num_images, config.num_classes, config.task, name))


def _require_scorable(labels: torch.Tensor, config: ModelConfig) -> None:
    """Early stopping needs a validation AUC, so some class must have both outcomes."""
    if not scorable_classes(labels.numpy(), config.num_classes, config.task).any():
        raise ValueError(
            "val_labels: no class has both positive and negative samples, so the validation "
            "ROC-AUC that early stopping uses is undefined"
        )


def _copy_state(model: nn.Module) -> StateDict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
