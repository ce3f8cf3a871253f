"""The ``gestalt-al`` command: the one entry point for users."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gestalt_al.data import DataLoadError, ImageSet, bundled_nih_path, load_dataset
from gestalt_al.data.npz import open_npz, read_array
from gestalt_al.latents import random_projection_latents
from gestalt_al.ranking import VARIANTS, Selection, gestalt_scores, select_top

PLACEHOLDER_NOTE = (
    "NOTE: latents are a fixed random projection of the images, NOT saliency maps; the "
    "saliency-latent stage is not built yet. The ranking and selection are the real GESTALT code."
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (DataLoadError, ValueError) as exc:
        print(f"gestalt-al: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gestalt-al", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="rank a pool with GESTALT and print the top queries (bundled NIH sample)"
    )
    demo.add_argument("--data", type=Path, default=None, help=".npz archive or image folder")
    demo.add_argument("--labels-csv", type=Path, default=None, help="labels for an image folder")
    demo.add_argument("--split", default="train", help="split of an .npz archive to use as pool")
    demo.add_argument("--images-key", default="images", help="e.g. images_64 for the NIH 64 px set")
    demo.add_argument("--initial-labeled", type=int, default=100, help="labeled set size M")
    demo.add_argument("--budget", type=int, default=10, help="queries per variant (b)")
    demo.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    demo.add_argument("--latent-dim", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=None, help="write the selections as JSON")
    demo.set_defaults(run=_demo)

    rank = commands.add_parser("rank", help="rank precomputed latents from an .npz file")
    rank.add_argument(
        "latents",
        type=Path,
        help=".npz with latents [N,K,D], ids [N], optional train_latents [M,K,D]",
    )
    rank.add_argument("--variant", choices=VARIANTS, default="node")
    rank.add_argument("--budget", type=int, default=10)
    rank.set_defaults(run=_rank)
    return parser


def _demo(args: argparse.Namespace) -> int:
    data = load_dataset(
        args.data or bundled_nih_path(), args.split, args.images_key, args.labels_csv
    )
    if data.labels is None:
        raise ValueError(
            f"{data.source}: the demo needs labels to pick a labeled set; pass --labels-csv"
        )
    if not 2 <= args.initial_labeled < len(data):
        raise ValueError(
            f"--initial-labeled must be in 2..{len(data) - 1}, got {args.initial_labeled}"
        )
    rng = np.random.default_rng(args.seed)
    labeled_mask = np.zeros(len(data), dtype=bool)
    labeled_mask[rng.choice(len(data), size=args.initial_labeled, replace=False)] = True
    labeled, pool = (
        data.subset(np.flatnonzero(labeled_mask)),
        data.subset(np.flatnonzero(~labeled_mask)),
    )
    latents = random_projection_latents(data.images, data.num_classes, args.latent_dim, args.seed)
    print(
        f"data: {data.source} ({len(data)} images, K={data.num_classes} classes, "
        f"{'multi-label' if data.multi_label else 'multi-class'})"
    )
    print(f"labeled set M={len(labeled)}, pool N={len(pool)}, budget b={args.budget}")
    print(PLACEHOLDER_NOTE)
    variants = VARIANTS if args.variant == "all" else (args.variant,)
    report = {}
    for variant in variants:
        scores = gestalt_scores(latents[~labeled_mask], variant, latents[labeled_mask])
        selection = select_top(scores, pool.ids, args.budget)
        _print_selection(variant, selection, pool)
        report[variant] = [
            {"id": str(pool.ids[i]), "score": float(s), "findings": pool.findings(int(i))}
            for i, s in zip(selection.indices, selection.scores, strict=True)
        ]
    if args.out:
        args.out.write_text(json.dumps({"note": PLACEHOLDER_NOTE, "selections": report}, indent=2))
        print(f"\nwrote {args.out}")
    return 0


def _rank(args: argparse.Namespace) -> int:
    source = str(args.latents)
    with open_npz(args.latents) as archive:
        missing = {"latents", "ids"} - set(archive.files)
        if missing:
            raise DataLoadError(f"{source}: missing array(s) {sorted(missing)}")
        train = (
            read_array(archive, "train_latents", source)
            if "train_latents" in archive.files
            else None
        )
        scores = gestalt_scores(read_array(archive, "latents", source), args.variant, train)
        ids = read_array(archive, "ids", source).astype(str)
    selection = select_top(scores, ids, args.budget)
    for position, (i, s) in enumerate(zip(selection.indices, selection.scores, strict=True), 1):
        print(f"{position:>4}  {ids[i]}  {s:.4f}")
    return 0


def _print_selection(variant: str, selection: Selection, pool: ImageSet) -> None:
    print(
        f"\nGESTALT-{variant}: top {selection.indices.size} of {len(pool)} "
        "(score = mean rank; higher = more informative)"
    )
    print(
        f"{'#':>4}  {'sample id':<20} {'score':>9}  findings (ground truth, unseen by the ranking)"
    )
    for position, (i, s) in enumerate(zip(selection.indices, selection.scores, strict=True), 1):
        findings = ", ".join(pool.findings(int(i))) or "no finding"
        print(f"{position:>4}  {pool.ids[i]!s:<20} {s:>9.3f}  {findings}")
