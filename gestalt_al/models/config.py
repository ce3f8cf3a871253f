"""What a task model is, as plain data: enough to rebuild it from saved weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Arch = Literal["densenet121", "resnet18", "small_cnn"]
Task = Literal["multi_label", "multi_class"]
ARCHS: tuple[Arch, ...] = ("densenet121", "resnet18", "small_cnn")
TASKS: tuple[Task, ...] = ("multi_label", "multi_class")
MIN_IMAGE_SIZE = 28
MAX_IMAGE_SIZE = 320
# Below this size the ImageNet stem (7x7 stride 2 + max-pool, /32 overall) leaves DenseNet-121
# with nothing to pool, so small images get a 3x3 stride-1 stem without pooling (/8 overall).
SMALL_STEM_BELOW = 64


@dataclass(frozen=True)
class ModelConfig:
    """A backbone, its input (channels, square size) and its head (K outputs, task).

    Images enter the model as floats in [0, 1]: the Deep Taylor z+ rule at the first layer
    assumes non-negative inputs, so there is no mean/std normalisation in front.
    """

    arch: Arch
    num_classes: int
    task: Task = "multi_label"
    in_channels: int = 1
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must lie in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px, "
                f"got {self.image_size}"
            )
        min_classes = 2 if self.task == "multi_class" else 1
        if self.num_classes < min_classes:
            raise ValueError(f"a {self.task} head needs >= {min_classes} classes")

    @property
    def small_stem(self) -> bool:
        return self.image_size < SMALL_STEM_BELOW

    def to_dict(self) -> dict[str, str | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> ModelConfig:
        expected = {"arch", "num_classes", "task", "in_channels", "image_size"}
        if set(raw) != expected:
            raise ValueError(f"model config keys must be {sorted(expected)}, got {sorted(raw)}")
        return cls(
            arch=str(raw["arch"]),  # type: ignore[arg-type]
            num_classes=int(raw["num_classes"]),  # type: ignore[call-overload]
            task=str(raw["task"]),  # type: ignore[arg-type]
            in_channels=int(raw["in_channels"]),  # type: ignore[call-overload]
            image_size=int(raw["image_size"]),  # type: ignore[call-overload]
        )
