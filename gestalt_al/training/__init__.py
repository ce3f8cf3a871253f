"""Training and evaluation of task models: augmentation, metrics and the training loop."""

from gestalt_al.training.augment import (
    AffineParams,
    AugmentConfig,
    affine_theta,
    apply_affine,
    augment_batch,
    sample_affine_params,
)
from gestalt_al.training.metrics import (
    ClassificationMetrics,
    check_labels,
    classification_metrics,
    scorable_classes,
)
from gestalt_al.training.train import (
    EpochRecord,
    TrainConfig,
    TrainResult,
    checked_training_data,
    evaluate,
    make_optimizer,
    predict_probabilities,
    train_one_epoch,
    train_task_model,
)

__all__ = [
    "AffineParams",
    "AugmentConfig",
    "ClassificationMetrics",
    "EpochRecord",
    "TrainConfig",
    "TrainResult",
    "affine_theta",
    "apply_affine",
    "augment_batch",
    "check_labels",
    "checked_training_data",
    "classification_metrics",
    "evaluate",
    "make_optimizer",
    "predict_probabilities",
    "sample_affine_params",
    "scorable_classes",
    "train_one_epoch",
    "train_task_model",
]
