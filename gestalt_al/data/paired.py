"""Two modalities of the same samples (M-VAAL's main and auxiliary inputs), id by id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gestalt_al.data.imageset import DataLoadError, ImageSet
from gestalt_al.data.npz import load_npz


@dataclass(frozen=True)
class PairedImageSet:
    """``main`` carries ids and labels; ``aux`` (None for VAAL) has the same ids in order."""

    main: ImageSet
    aux: ImageSet | None

    def __post_init__(self) -> None:
        if self.aux is None:
            return
        if not np.array_equal(self.main.ids, self.aux.ids):
            raise DataLoadError(
                f"{self.main.source} and {self.aux.source}: the modalities' sample ids differ"
            )
        if self.main.images.shape[1:] != self.aux.images.shape[1:]:
            raise DataLoadError(
                f"{self.main.source} and {self.aux.source}: image sizes differ "
                f"({self.main.images.shape[1:]} vs {self.aux.images.shape[1:]})"
            )

    def __len__(self) -> int:
        return len(self.main)

    @property
    def ids(self) -> np.ndarray:
        return self.main.ids

    def subset(self, indices: np.ndarray) -> PairedImageSet:
        aux = self.aux.subset(indices) if self.aux is not None else None
        return PairedImageSet(self.main.subset(indices), aux)


def load_paired_npz(
    path: str | Path, split: str, main_key: str, aux_key: str | None
) -> PairedImageSet:
    """``{split}_{main_key}`` and ``{split}_{aux_key}`` of one archive as a pair."""
    main = load_npz(path, split, main_key)
    return PairedImageSet(main, load_npz(path, split, aux_key) if aux_key else None)
