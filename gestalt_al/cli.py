"""The ``gestalt-al`` command: the one entry point for users."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gestalt_al.data import (
    DataLoadError,
    ImageSet,
    bundled_lgg_path,
    bundled_nih_path,
    load_dataset,
    load_paired_npz,
)
from gestalt_al.data.npz import open_npz, read_array
from gestalt_al.latents import SaliencyLatentEncoder, load_autoencoder, save_autoencoder
from gestalt_al.models import (
    ARCHS,
    ModelConfig,
    as_model_input,
    load_model,
    save_model,
    unit_images,
)
from gestalt_al.mvaal import MVAALConfig, discriminator_scores, select_lowest
from gestalt_al.mvaal.config import ADVERSARIAL_OBJECTIVES
from gestalt_al.mvaal.train import train_mvaal
from gestalt_al.pipeline import RoundResult, RoundSettings, run_round
from gestalt_al.plots.explain import explain_figure
from gestalt_al.plots.scores import score_histogram
from gestalt_al.ranking import VARIANTS, Selection, gestalt_scores, select_top
from gestalt_al.saliency import METHODS, canonize
from gestalt_al.training import TrainConfig

if TYPE_CHECKING:
    from gestalt_al.distributed.epochs import RayRun


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (DataLoadError, ValueError) as exc:
        print(f"gestalt-al: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gestalt-al: error: cannot write output: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gestalt-al", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    service = commands.add_parser(
        "demo",
        help="one AL round through the service: Ray Train, Serve, ranking actor, gRPC "
        "(bundled NIH sample)",
    )
    service.add_argument("--data", type=Path, default=None, help=".npz archive (NIH layout)")
    service.add_argument("--budget", type=int, default=10, help="queries per strategy (b)")
    service.add_argument("--sampler-epochs", type=int, default=6, help="VAAL epochs")
    _add_service_arguments(service)
    service.set_defaults(run=_service_demo)

    demo = commands.add_parser(
        "local-demo",
        help="rank a pool with GESTALT in this process, no Ray (bundled NIH sample)",
    )
    _add_data_arguments(demo)
    demo.add_argument("--initial-labeled", type=int, default=100, help="labeled set size M")
    demo.add_argument("--pool-limit", type=int, default=None, help="rank only the first N")
    demo.add_argument("--budget", type=int, default=10, help="queries per variant (b)")
    demo.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    demo.add_argument("--arch", choices=ARCHS, default="densenet121")
    demo.add_argument("--saliency", choices=METHODS, default="deep_taylor")
    demo.add_argument("--epochs", type=int, default=15, help="most training epochs")
    demo.add_argument("--learning-rate", type=float, default=1e-4)
    demo.add_argument("--latent-dim", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=None, help="write the selections as JSON")
    demo.add_argument(
        "--save-dir",
        type=Path,
        default=None,
        help="write model.pt, autoencoder.pt, latents.npz and explain.png here",
    )
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

    explain = commands.add_parser(
        "explain", help="PNG of chosen samples: image, K class saliency maps, class graph"
    )
    explain.add_argument("--model", type=Path, required=True, help="model.pt from demo")
    explain.add_argument("--autoencoder", type=Path, required=True, help="autoencoder.pt")
    _add_data_arguments(explain)
    explain.add_argument("--ids", nargs="+", required=True, help="sample ids to explain")
    explain.add_argument("--out", type=Path, default=Path("explain.png"))
    explain.set_defaults(run=_explain)

    mvaal = commands.add_parser(
        "mvaal", help="train the M-VAAL (or VAAL) sampler and query the lowest-scored pool samples"
    )
    mvaal.add_argument("--data", type=Path, default=None, help=".npz with paired modalities")
    mvaal.add_argument("--split", default="train")
    mvaal.add_argument("--main", default="t1post", help="main modality key (encoded)")
    mvaal.add_argument(
        "--aux", default="images", help="auxiliary modality key (decoded); 'none' for VAAL"
    )
    mvaal.add_argument("--initial-labeled", type=int, default=40)
    mvaal.add_argument("--budget", type=int, default=16)
    mvaal.add_argument("--epochs", type=int, default=8)
    mvaal.add_argument("--image-size", type=int, default=64)
    mvaal.add_argument("--width", type=int, default=16, help="first conv width (paper: 128)")
    mvaal.add_argument("--latent-dim", type=int, default=64)
    mvaal.add_argument("--gamma-aux", type=float, default=1.0, help="gamma_3")
    mvaal.add_argument("--objective", choices=ADVERSARIAL_OBJECTIVES, default="all_labeled")
    mvaal.add_argument("--seed", type=int, default=0)
    mvaal.add_argument("--out-dir", type=Path, default=None, help="history JSON + histogram")
    _add_ray_arguments(mvaal, default_workers=None)
    mvaal.set_defaults(run=_mvaal)

    train = commands.add_parser(
        "train", help="train round r's task model with Ray Train and publish its model id"
    )
    _add_data_arguments(train)
    train.add_argument(
        "--labeled-ids", type=Path, default=None, help="file of labeled ids, one per line"
    )
    train.add_argument("--initial-labeled", type=int, default=100, help="size of a random set")
    train.add_argument("--arch", choices=ARCHS, default="resnet18")
    train.add_argument("--epochs", type=int, default=15, help="most training epochs")
    train.add_argument("--learning-rate", type=float, default=1e-4)
    train.add_argument("--batch-size", type=int, default=16, help="per worker")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=None, help="write history and model id")
    _add_ray_arguments(train, default_workers=2)
    train.set_defaults(run=_train)

    loop = commands.add_parser(
        "loop",
        help="continuous AL rounds through the service, the data set's labels as oracle "
        "(bundled NIH sample)",
    )
    loop.add_argument("--strategy", default="gestalt_node")
    loop.add_argument("--budget", type=int, default=20)
    loop.add_argument("--max-rounds", type=int, default=3)
    loop.add_argument("--max-labels", type=int, default=0)
    loop.add_argument("--sampler-epochs", type=int, default=0, help="VAAL epochs (vaal, hybrid)")
    loop.add_argument("--saliency", choices=METHODS, default="deep_taylor")
    loop.add_argument("--workers", type=int, default=2)
    loop.add_argument("--cpus-per-worker", type=float, default=0.25)
    loop.add_argument("--image-size", type=int, default=0)
    loop.add_argument("--pool-size", type=int, default=0, help="first N training images (0: all)")
    loop.add_argument("--shard-size", type=int, default=128)
    _add_service_arguments(loop)
    loop.set_defaults(run=_loop)

    simulate = commands.add_parser(
        "simulate",
        help="learning curves: every strategy against an oracle, over seeds (Ray tasks)",
    )
    simulate.add_argument("--datasets", nargs="+", default=["breast"],
                          help="nih, pneumonia, breast, lgg")  # fmt: skip
    simulate.add_argument("--strategies", nargs="+", default=None, help="default: all")
    simulate.add_argument("--seeds", type=int, default=5)
    simulate.add_argument("--rounds", type=int, default=4, help="query rounds after round 0")
    simulate.add_argument("--epochs", type=int, default=15, help="max task-model epochs")
    simulate.add_argument("--sampler-epochs", type=int, default=5, help="VAAL/M-VAAL epochs")
    simulate.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    simulate.add_argument("--device", default="cpu", help="cpu or cuda")
    simulate.add_argument("--out", type=Path, default=Path("al-simulation"),
                          help="runs (resumable), curves and results.json")  # fmt: skip
    simulate.set_defaults(run=_simulate)

    token = commands.add_parser(
        "token",
        help="grant (or revoke) a bearer token for the service: prints the new token once; "
        "the tokens file keeps only its SHA-256 digest",
    )
    token.add_argument("--tokens-file", type=Path, required=True,
                       help="the JSON the service reads (auth_tokens_file)")  # fmt: skip
    token.add_argument("--principal", required=True, help="who: recorded in the audit trail")
    token.add_argument("--role", choices=["reader", "labeler", "operator"], default="labeler")
    token.add_argument("--revoke", action="store_true", help="remove the principal's tokens")
    token.set_defaults(run=_token)
    return parser


def _token(args: argparse.Namespace) -> int:
    from gestalt_al.service.access import grant, revoke

    if args.revoke:
        found = revoke(args.tokens_file, args.principal)
        print(f"{args.principal}: {'revoked' if found else 'had no token'}", file=sys.stderr)
        return 0 if found else 1
    print(grant(args.tokens_file, args.principal, args.role))
    print(f"{args.principal} ({args.role}): token above, shown only now", file=sys.stderr)
    return 0


def _add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """What every command that runs the service locally shares."""
    parser.add_argument("--images-key", default="images_64")
    parser.add_argument("--storage", default=None, type=_absolute_location,
                        help="service store: a folder or s3://bucket/prefix (default: a new "
                        "temporary folder)")  # fmt: skip
    parser.add_argument("--initial-labeled", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=6, help="task model epochs")
    parser.add_argument("--grpc-port", type=int, default=50051)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)


def _absolute_location(location: str) -> str:
    """Folders made absolute: the service refuses relative pool paths (they would depend on
    a replica's working directory)."""
    return location if "://" in location else str(Path(location).resolve())


def _add_ray_arguments(parser: argparse.ArgumentParser, default_workers: int | None) -> None:
    parser.add_argument("--workers", type=int, default=default_workers,
                        help="Ray Train workers" + ("" if default_workers else
                                                    " (default: one process, no Ray)"))  # fmt: skip
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--storage", default="gestalt-runs",
                        help="checkpoints and models: a folder or s3://bucket/prefix "
                        "(S3 endpoint and keys from GESTALT_S3_* variables)")  # fmt: skip
    parser.add_argument("--round", type=int, default=0, help="AL round (names run and model)")
    parser.add_argument("--max-failures", type=int, default=2, help="worker failures survived")


def _ray_run(args: argparse.Namespace, job: str) -> RayRun:
    """The Ray Train run for this round; joins ``RAY_ADDRESS``'s cluster or starts one.
    Ray is imported here, not at the top: it takes seconds, and most commands never need it."""
    import ray

    from gestalt_al.distributed.epochs import RayRun

    if args.workers < 1 or args.round < 0:
        raise ValueError(f"need --workers >= 1 and --round >= 0, got {args.workers}, {args.round}")
    if not ray.is_initialized():
        ray.init()
    name = f"{job}-r{args.round:04d}"
    return RayRun(name, args.storage, args.workers, args.use_gpu, args.max_failures)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help=".npz archive or image folder")
    parser.add_argument("--labels-csv", type=Path, default=None, help="labels for a folder")
    parser.add_argument("--split", default="train", help="split of an .npz archive (the pool)")
    parser.add_argument("--images-key", default="images_64", help="images (28 px) or images_64")


def _load(args: argparse.Namespace, split: str) -> ImageSet:
    return load_dataset(args.data or bundled_nih_path(), split, args.images_key, args.labels_csv)


def _service_demo(args: argparse.Namespace) -> int:
    """Imported here: Ray and Serve take seconds to import, and only this command needs them."""
    from services.demo import run_demo

    if args.storage is None:
        args.storage = tempfile.mkdtemp(prefix="gestalt-demo-")
        print(f"service store: {args.storage}")
    return run_demo(args)


def _loop(args: argparse.Namespace) -> int:
    """Imported here: Ray and Serve take seconds to import, and only this command needs them."""
    from services.loop_demo import run_loop_demo

    return run_loop_demo(args)


def _simulate(args: argparse.Namespace) -> int:
    """Imported here: only this command needs Ray."""
    from gestalt_al.simulation.command import simulate_and_report
    from gestalt_al.simulation.grid import GridSettings
    from gestalt_al.strategies import STRATEGY_NAMES

    grid = GridSettings(str(args.data_dir), str(args.out), args.rounds, args.seeds, args.device,
                        args.sampler_epochs, args.epochs)  # fmt: skip
    strategies = tuple(args.strategies or STRATEGY_NAMES)
    if "random" not in strategies:
        raise ValueError("--strategies must include random: every number is relative to it")
    simulate_and_report(grid, tuple(args.datasets), strategies, args.out, args.out / "results.json")
    return 0


def _demo(args: argparse.Namespace) -> int:
    data = _load(args, args.split)
    if data.labels is None:
        raise ValueError(
            f"{data.source}: the demo needs labels to pick a labeled set; pass --labels-csv"
        )
    validation = _load(args, "val")
    if not 2 <= args.initial_labeled < len(data):
        raise ValueError(
            f"--initial-labeled must be in 2..{len(data) - 1}, got {args.initial_labeled}"
        )
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(data))
    labeled = data.subset(np.sort(order[: args.initial_labeled]))
    pool = data.subset(np.sort(order[args.initial_labeled :][: args.pool_limit]))
    if args.budget > len(pool):
        raise ValueError(f"budget {args.budget} is larger than the pool ({len(pool)} samples)")
    print(
        f"data: {data.source} ({len(data)} images, K={data.num_classes} classes, "
        f"{'multi-label' if data.multi_label else 'multi-class'}); validation {len(validation)}"
    )
    print(f"labeled set M={len(labeled)}, pool N={len(pool)}, budget b={args.budget}")
    # Fail on an unwritable destination now, not after minutes of training.
    for directory in (args.out.parent if args.out else None, args.save_dir):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    settings = RoundSettings(
        arch=args.arch,
        image_size=int(data.images.shape[-1]),
        method=args.saliency,
        latent_dim=args.latent_dim,
        train=TrainConfig(max_epochs=args.epochs, learning_rate=args.learning_rate),
        seed=args.seed,
    )
    variants = VARIANTS if args.variant == "all" else (args.variant,)
    result = run_round(labeled, pool, validation, settings, variants)
    best = result.training.best_metrics
    print(
        f"{args.arch} trained on M={len(labeled)}: validation macro ROC-AUC "
        f"{best.macro_auc:.3f} (epoch {result.training.best_epoch}); "
        f"latents from {args.saliency} maps, [N, K, D] = {list(result.pool_latents.shape)}"
    )
    report = {}
    for variant in variants:
        selection = select_top(result.scores[variant], pool.ids, args.budget)
        _print_selection(variant, selection, pool)
        report[variant] = [
            {"id": str(pool.ids[i]), "score": float(s), "findings": pool.findings(int(i))}
            for i, s in zip(selection.indices, selection.scores, strict=True)
        ]
    if args.out:
        summary = {"validation_macro_auc": best.macro_auc, "saliency": args.saliency}
        args.out.write_text(json.dumps({**summary, "selections": report}, indent=2))
        print(f"\nwrote {args.out}")
    if args.save_dir:
        _save_round(args.save_dir, result, labeled, pool, report[variants[-1]])
    return 0


def _save_round(
    directory: Path,
    result: RoundResult,
    labeled: ImageSet,
    pool: ImageSet,
    top: list[dict[str, object]],
) -> None:
    """The artifacts a user reuses: weights, autoencoder, latents, and a picture of the top 3."""
    directory.mkdir(parents=True, exist_ok=True)
    save_model(result.training.model, result.model_config, directory / "model.pt")
    save_autoencoder(
        result.encoder.autoencoder, result.encoder.method, directory / "autoencoder.pt"
    )
    np.savez(
        directory / "latents.npz",
        latents=result.pool_latents,
        ids=pool.ids,
        train_latents=result.labeled_latents,
        train_ids=labeled.ids,
    )
    shown = [int(np.flatnonzero(pool.ids == row["id"])[0]) for row in top[:3]]
    explain_figure(
        directory / "explain.png",
        pool.images[shown],
        result.pool_maps[shown].numpy(),
        result.pool_latents[shown],
        pool.label_names,
        [_title(pool, i) for i in shown],
        signed_maps=result.encoder.method == "deep_taylor",
    )
    print(f"wrote model.pt, autoencoder.pt, latents.npz and explain.png to {directory}")


def _explain(args: argparse.Namespace) -> int:
    model, config = load_model(args.model)
    autoencoder, method = load_autoencoder(args.autoencoder)
    data = _load(args, args.split)
    positions = {str(sample_id): i for i, sample_id in enumerate(data.ids)}
    unknown = [i for i in args.ids if i not in positions]
    if unknown:
        raise ValueError(f"unknown sample id(s) in {data.source}: {unknown[:5]}")
    shown = [positions[i] for i in args.ids]
    if len(data.label_names) != config.num_classes:
        raise ValueError(
            f"the model has {config.num_classes} classes, {data.source} has {len(data.label_names)}"
        )
    encoder = SaliencyLatentEncoder(canonize(model), method, autoencoder)
    maps = encoder.maps(as_model_input(data.images[shown], config), progress=False)
    explain_figure(
        args.out,
        data.images[shown],
        maps.numpy(),
        encoder.encode(maps),
        data.label_names,
        [_title(data, i) for i in shown],
        signed_maps=method == "deep_taylor",
    )
    print(f"wrote {args.out}")
    return 0


def _mvaal(args: argparse.Namespace) -> int:
    aux_key = None if args.aux == "none" else args.aux
    data = load_paired_npz(args.data or bundled_lgg_path(), args.split, args.main, aux_key)
    if not 2 <= args.initial_labeled <= len(data) - 2:
        raise ValueError(
            f"--initial-labeled must be in 2..{len(data) - 2}, got {args.initial_labeled}"
        )
    config = MVAALConfig(
        image_size=args.image_size,
        aux_channels=1 if aux_key else 0,
        latent_dim=args.latent_dim,
        width=args.width,
        gamma_aux=args.gamma_aux,
        adversarial_objective=args.objective,
    )
    order = np.random.default_rng(args.seed).permutation(len(data))
    labeled = data.subset(np.sort(order[: args.initial_labeled]))
    pool = data.subset(np.sort(order[args.initial_labeled :]))
    if args.budget > len(pool):
        raise ValueError(f"budget {args.budget} is larger than the pool ({len(pool)} samples)")
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    method = f"M-VAAL ({args.main} -> {args.main} + {aux_key})" if aux_key else "VAAL"
    print(f"{method}: labeled {len(labeled)}, pool {len(pool)}, budget {args.budget}")
    if args.workers is None:
        models, records = train_mvaal(config, labeled, pool, args.epochs, args.seed)
        history = [record.as_dict() for record in records]
    else:
        from gestalt_al.distributed.mvaal import train_mvaal_ray

        run = _ray_run(args, "mvaal" if config.multimodal else "vaal")
        trained = train_mvaal_ray(config, labeled, pool, args.epochs, run, args.seed)
        models, history = trained.models, trained.history
        print(f"Ray Train run {run.name} ({args.workers} workers): {trained.checkpoint_path}")
    scores = {
        name: discriminator_scores(
            models.vae, models.discriminator,
            unit_images(part.main.images, config.image_size, config.main_channels),
        )
        for name, part in (("labeled", labeled), ("pool", pool))
    }  # fmt: skip
    selection = select_lowest(scores["pool"], pool.ids, args.budget)
    auc = history[-1]["discriminator_auc"]
    print(f"discriminator ROC-AUC, labeled vs pool: {auc:.3f}")
    print(f"\n{method}: the {args.budget} lowest discriminator scores")
    for position, i in enumerate(selection.indices, 1):
        print(f"{position:>4}  {pool.ids[i]!s:<32} {scores['pool'][i]:.4f}")
    if args.out_dir:
        report = {
            "history": history,
            "selection": [
                {"id": str(pool.ids[i]), "score": float(scores["pool"][i])}
                for i in selection.indices
            ],
        }
        (args.out_dir / "mvaal.json").write_text(json.dumps(report, indent=2))
        score_histogram(
            args.out_dir / "scores.png", scores["labeled"], scores["pool"],
            scores["pool"][selection.indices],
            f"{method}, {args.epochs} epochs: AUC {auc:.3f}",
        )  # fmt: skip
        print(f"wrote mvaal.json and scores.png to {args.out_dir}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from gestalt_al.distributed.registry import ModelRegistry
    from gestalt_al.distributed.task_model import train_task_model_ray

    data, validation = _load(args, args.split), _load(args, "val")
    if data.labels is None or validation.labels is None:
        raise ValueError(f"{data.source}: training needs labels; pass --labels-csv")
    if args.labeled_ids:
        labeled = data.subset(_indices_of(data, args.labeled_ids))
    elif 2 <= args.initial_labeled <= len(data):
        order = np.random.default_rng(args.seed).permutation(len(data))
        labeled = data.subset(np.sort(order[: args.initial_labeled]))
    else:
        raise ValueError(f"--initial-labeled must be in 2..{len(data)}, got {args.initial_labeled}")
    assert labeled.labels is not None  # a subset of a labeled set
    config = ModelConfig(
        args.arch, data.num_classes, "multi_label" if data.multi_label else "multi_class",
        image_size=int(data.images.shape[-1]),
    )  # fmt: skip
    settings = TrainConfig(
        max_epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        seed=args.seed,
    )  # fmt: skip
    run = _ray_run(args, "task")
    print(f"training {args.arch} on {len(labeled)} labeled images with {args.workers} Ray Train "
          f"workers; run {run.name} in {args.storage}")  # fmt: skip
    result = train_task_model_ray(
        config, labeled.images, labeled.labels, validation.images, validation.labels, settings,
        run,
    )  # fmt: skip
    for record in result.history:
        print(f"epoch {record['epoch']:>3.0f}  loss {record['train_loss']:.4f}  val macro AUC "
              f"{record['val_macro_auc']:.4f}  {record['epoch_seconds']:.1f} s")  # fmt: skip
    model_id = ModelRegistry(args.storage).publish(
        "task", args.round, config.to_dict(), result.model.state_dict()
    )
    print(f"round {args.round} model: {model_id} (best epoch {result.best_epoch}, "
          f"{result.restarts} restarts)")  # fmt: skip
    if args.out:
        report = {"model_id": model_id, "best_epoch": result.best_epoch,
                  "restarts": result.restarts, "history": result.history}  # fmt: skip
        args.out.write_text(json.dumps(report, indent=2))
    return 0


def _indices_of(data: ImageSet, ids_file: Path) -> np.ndarray:
    wanted = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    position = {str(sample_id): i for i, sample_id in enumerate(data.ids)}
    unknown = [sample_id for sample_id in wanted if sample_id not in position]
    if unknown:
        raise ValueError(
            f"{ids_file}: {len(unknown)} id(s) not in {data.source}, e.g. {unknown[:3]}"
        )
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"{ids_file}: ids repeat; list each labeled sample once")
    if len(wanted) < 2:
        raise ValueError(f"{ids_file}: need at least 2 labeled ids, got {len(wanted)}")
    return np.sort([position[sample_id] for sample_id in wanted])


def _title(data: ImageSet, index: int) -> str:
    findings = ", ".join(data.findings(index)) if data.labels is not None else "unlabeled"
    return f"{data.ids[index]}\n{findings or 'no finding'}"


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
