"""Rebuild gestalt_al/data/samples/lgg_mri_64.npz from ../shared/data/lgg_mri_flair_mask_64.npz.

The bundled sample keeps whole patients (the source split is by patient) and only patients
whose every slice has real T1 pre- and post-contrast sequences (no FLAIR copies), so the two
modalities M-VAAL pairs are always distinct images.

    .venv/bin/python scripts/make_lgg_sample.py [../shared/data/lgg_mri_flair_mask_64.npz]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PATIENTS = {"train": 14, "val": 3}
FIELDS = ("images", "t1pre", "t1post", "masks", "labels", "patients", "slices")
OUT = Path(__file__).parent.parent / "gestalt_al" / "data" / "samples" / "lgg_mri_64.npz"


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/lgg_mri_flair_mask_64.npz")
    arrays: dict[str, np.ndarray] = {}
    with np.load(source, allow_pickle=False) as data:
        for split, count in PATIENTS.items():
            patients = data[f"{split}_patients"]
            copies = data[f"{split}_t1pre_is_flair_copy"] | data[f"{split}_t1post_is_flair_copy"]
            clean = sorted(set(patients.tolist()) - set(patients[copies].tolist()))[:count]
            keep = np.isin(patients, clean)
            for field in FIELDS:
                arrays[f"{split}_{field}"] = data[f"{split}_{field}"][keep]
            # Stable ids for the loaders: patient / slice number.
            arrays[f"{split}_ids"] = np.array(
                [
                    f"{patient}/{int(slice_):03d}"
                    for patient, slice_ in zip(
                        arrays[f"{split}_patients"], arrays[f"{split}_slices"], strict=True
                    )
                ]
            )
    np.savez_compressed(OUT, **arrays)
    sizes = {split: int(arrays[f"{split}_labels"].shape[0]) for split in PATIENTS}
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB): slices per split {sizes}")


if __name__ == "__main__":
    main()
