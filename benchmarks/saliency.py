"""Saliency-latent benchmark: images/s for all K = 14 class latents of a batch of 32.

For DenseNet-121 and ResNet-18 at 64 and 224 px, Deep Taylor and Grad-CAM, it times our
batched maps (one forward pass, batched backward passes) against the naive loop of one Captum
call per class, in the same run on the same canonical net, and checks both give the same maps.
Both sides then encode the maps with the same (untrained; speed does not depend on its
weights) map autoencoder, so the numbers are for latents ``[B, K, D]``, as the issue asks.
Prints a table and writes ``benchmarks/results/saliency.json``.

    .venv/bin/python benchmarks/saliency.py [--archs resnet18] [--sizes 64] [--methods grad_cam]
        [--device cuda] [--autocast bf16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from timing import best_of

from gestalt_al.latents import MapAutoencoder
from gestalt_al.models import ARCHS, ModelConfig, build_model
from gestalt_al.models.config import Arch
from gestalt_al.saliency import Method, canonize, class_saliency
from gestalt_al.saliency.captum_reference import captum_deep_taylor, captum_grad_cam

K, BATCH = 14, 32
RESULTS = Path(__file__).parent / "results" / "saliency.json"
NAIVE: dict[str, Callable[..., torch.Tensor]] = {
    "deep_taylor": lambda net, images, classes: captum_deep_taylor(net, images, classes).sum(2),
    "grad_cam": captum_grad_cam,
}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


@contextlib.contextmanager
def precision(device: torch.device, autocast: str) -> Iterator[None]:
    if autocast == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def timed_latents(
    compute_maps: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    chunk: int,
    autoencoder: MapAutoencoder,
    device: torch.device,
    autocast: str,
) -> torch.Tensor:
    """Maps then latents, with the device drained so the clock sees all the work."""
    with precision(device, autocast):
        maps = torch.cat([compute_maps(part).float() for part in torch.split(images, chunk)])
    autoencoder.encode(maps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return maps


def measure(
    arch: Arch,
    size: int,
    method: Method,
    device: torch.device,
    autocast: str,
    repeats: int,
    chunk: int,
) -> dict[str, float]:
    torch.manual_seed(0)
    net = canonize(build_model(ModelConfig(arch, K, image_size=size)).eval()).to(device)
    images = torch.rand(BATCH, 1, size, size, device=device)
    autoencoder = MapAutoencoder().to(device)
    classes = list(range(K))
    ours = partial(class_saliency, net, method=method)
    naive = partial(NAIVE[method], net, classes=classes)
    run_ours = partial(timed_latents, ours, images, chunk, autoencoder, device, autocast)
    run_ours()  # warm-up: kernels, allocator
    t_ours, ours_maps = best_of(repeats, run_ours)
    t_naive, naive_maps = best_of(
        1, partial(timed_latents, naive, images, chunk, autoencoder, device, autocast)
    )
    # fp32 agrees to round-off; bf16 only roughly, so its check is on the map pattern.
    rtol, atol = (1e-3, 1e-5) if autocast == "none" else (0.1, 0.1)
    scale = naive_maps.abs().amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
    torch.testing.assert_close(ours_maps / scale, naive_maps / scale, rtol=rtol, atol=atol)
    return {
        "batched_images_per_s": BATCH / t_ours,
        "naive_images_per_s": BATCH / t_naive,
        "naive_s_per_batch": t_naive,
        "speedup": t_naive / t_ours,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=["densenet121", "resnet18"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    parser.add_argument(
        "--methods", nargs="+", choices=list(NAIVE), default=["deep_taylor", "grad_cam"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", choices=["none", "bf16"], default="none")
    parser.add_argument("--repeats", type=int, default=2, help="runs of ours (best counts)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=BATCH,
        help="feed the batch to both sides in chunks of this many images (memory)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    # Captum marks the input as requiring grad on every call and warns each time.
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    device = torch.device(args.device)
    header = (
        f"{'model':<12} {'px':>4} {'method':<12} {'batched img/s':>14} "
        f"{'naive img/s':>12} {'naive s/32':>11} {'ratio':>7}"
    )
    print(
        f"{machine(device)}, autocast {args.autocast}, batch {BATCH} "
        f"(in chunks of {args.chunk}), K = {K}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for arch in args.archs:
        for size in args.sizes:
            for method in args.methods:
                r = measure(arch, size, method, device, args.autocast, args.repeats, args.chunk)
                rows.append({"arch": arch, "size": size, "method": method, **r})
                print(
                    f"{arch:<12} {size:>4} {method:<12} "
                    f"{r['batched_images_per_s']:>14.1f} {r['naive_images_per_s']:>12.2f} "
                    f"{r['naive_s_per_batch']:>10.2f}s {r['speedup']:>6.1f}x",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "machine": machine(device),
        "autocast": args.autocast,
        "batch": BATCH,
        "chunk": args.chunk,
        "K": K,
    }
    args.out.write_text(json.dumps({**summary, "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
