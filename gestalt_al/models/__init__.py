"""Task models (DenseNet-121, ResNet-18, a small CNN) and their safe weight files."""

from gestalt_al.models.backbones import build_model, probabilities, task_loss
from gestalt_al.models.config import ARCHS, TASKS, ModelConfig
from gestalt_al.models.inputs import as_model_input, unit_images
from gestalt_al.models.weights import load_model, save_model

__all__ = [
    "ARCHS",
    "TASKS",
    "ModelConfig",
    "as_model_input",
    "build_model",
    "load_model",
    "probabilities",
    "save_model",
    "task_loss",
    "unit_images",
]
