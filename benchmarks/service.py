"""Service benchmark: one ranking round of the gestalt-al service end to end over gRPC, with 1
and with 2 ``SaliencyLatents`` replicas, then the global ranking step alone on 1M samples.

Part 1 (the service). A synthetic pool of ``--num-samples`` 28 x 28 uint8 images (random
Gaussian blobs, 14 label names) is written as ``.npz`` shards to a local folder; a ResNet-18
(K = 14, 1 channel, 28 px) with RANDOM weights plus a random map autoencoder (D = 16) and a
random VAAL sampler are published to the registry: the scores mean nothing, the work per
image is real, and that is all a throughput benchmark needs. A local Ray cluster (every CPU)
runs the service; for each ``--replicas`` count the app is (re)deployed with that many latent
replicas (Serve updates the running app in place), the pool is registered under its own id (so
no round is reused), ``--labeled`` random labels are submitted and one round is run from
``StartRound`` to ``DONE``, after a warm-up round on a 64-image pool (worker start-up and model
loading are not counted). Also recorded: each latent replica's CPU seconds in the round and the
GPU memory it holds (nvidia-smi); replicas use a GPU only with ``--use-gpu`` > 0 (one they
reserved). Reported per round: the client's end-to-end
seconds, the round's ``stage_seconds`` (Ray Data read, Serve scoring and store writes summed over
shards, so they overlap and can exceed the wall; the Ray Data wall; the global ranking wall),
samples/s, and the ranking actor's peak RSS (psutil, sampled every 0.1 s from this process).

Part 2 (ranking alone). ``--ranking-samples`` random latents ``[n, 14, 16]`` are written shard by
shard with ``RoundResults.write`` (FAISS index + weights, as the service writes them) to a local
store; then, each in a fresh spawned process, ``round_scores`` streams those shards (what the
ranking actor runs) and the baseline ``gestalt_scores`` ranks the whole in-memory latents array
(the three GESTALT variants). Peak memory is the process's VmHWM (peak RSS). Both must give the
same GESTALT scores.

Prints tables and merges its numbers into ``benchmarks/results/service.json`` under ``--label``.

    .venv/bin/python benchmarks/service.py [--num-samples 100000] [--shard-size 2000]
        [--replicas 1 2] [--cpus-per-replica 1] [--use-gpu 0.25] [--saliency deep_taylor]
        [--ranking-samples 1000000] [--skip-service | --skip-ranking]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from timing import best_of
from tqdm import tqdm

from gestalt_al.ranking import gestalt_scores
from gestalt_al.service.shard_results import RoundResults, ShardScores
from gestalt_al.service.strategies import GESTALT_STRATEGIES, round_scores
from gestalt_al.storage import open_store

RESULTS = Path(__file__).parent / "results" / "service.json"
K, IMAGE_SIZE, LATENT_DIM = 14, 28, 16
LABEL_NAMES = [f"finding_{k:02d}" for k in range(K)]
WARM_SAMPLES = 64
MB = 2**20
Row = dict[str, Any]


# --- synthetic data ----------------------------------------------------------------------
def blob_images(rng: np.random.Generator, n: int, blobs: int = 3) -> np.ndarray:
    """``[n, 28, 28]`` uint8: a few Gaussian blobs of random place, size and brightness."""
    grid = np.arange(IMAGE_SIZE, dtype=np.float32)
    centres = rng.uniform(4, IMAGE_SIZE - 4, size=(n, blobs, 2)).astype(np.float32)
    sigma = rng.uniform(1.5, 5.0, size=(n, blobs, 1, 1)).astype(np.float32)
    peak = rng.uniform(0.3, 1.0, size=(n, blobs, 1, 1)).astype(np.float32)
    dy = (grid[None, None, :, None] - centres[..., 0, None, None]) ** 2
    dx = (grid[None, None, None, :] - centres[..., 1, None, None]) ** 2
    image = (peak * np.exp(-(dy + dx) / (2 * sigma**2))).sum(axis=1)
    noise = rng.uniform(0, 0.05, size=image.shape).astype(np.float32)
    pixels: np.ndarray = (np.clip(image + noise, 0, 1) * 255).astype(np.uint8)
    return pixels


def random_labels(rng: np.random.Generator, m: int) -> np.ndarray:
    """``[m, K]`` 0/1 with both values present in every class (m >= 2)."""
    labels = rng.integers(0, 2, size=(m, K)).astype(np.float64)
    labels[0], labels[1] = 0.0, 1.0
    return labels


def synth_latents(seed: int, shard: int, count: int) -> np.ndarray:
    """The latents of one ranking shard, the same in every process that asks."""
    rng = np.random.default_rng([seed, shard])
    latents: np.ndarray = rng.normal(size=(count, K, LATENT_DIM)).astype(np.float32)
    return latents


def shard_counts(total: int, shard_size: int) -> list[int]:
    return [min(shard_size, total - start) for start in range(0, total, shard_size)]


# --- machine -----------------------------------------------------------------------------
def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": cpu_count(),
        "memory_gb": round(total_kb / 2**20, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": importlib.import_module("ray").__version__,
    }


def psutil_module() -> Any:
    """Ray ships psutil in its ``thirdparty_files`` (importing ray puts it on sys.path)."""
    importlib.import_module("ray")
    return importlib.import_module("psutil")


# --- part 1: the service -----------------------------------------------------------------
class RssSampler:
    """Peak RSS of one process, sampled on a thread every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.process = psutil_module().Process(pid)
        self.interval = interval
        self.before = int(self.process.memory_info().rss)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, int(self.process.memory_info().rss))
            except Exception:  # the process went away (a restarted actor): keep what we have
                return


def ranking_actor_pid() -> int:
    """The ranking actor's worker process: Ray titles it ``ray::RankingActor[.method]``."""
    psutil = psutil_module()
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::RankingActor"):
            return int(process.pid)
    raise RuntimeError("no ray::RankingActor process found on this machine")


def replica_cpu_seconds() -> dict[int, float]:
    """CPU seconds so far of every SaliencyLatents replica process, by pid."""
    psutil = psutil_module()
    found = {}
    for process in psutil.process_iter(["cmdline", "cpu_times"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and "SaliencyLatents" in cmdline[0] and cmdline[0].startswith("ray::Serve"):
            times = process.info["cpu_times"]
            found[int(process.pid)] = float(times.user + times.system)
    return found


def gpu_memory_mib() -> dict[int, int]:
    """GPU memory held per process id, from nvidia-smi (empty without one)."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in listing.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and mib.strip().isdigit():
            found[int(pid)] = int(mib)
    return found


def publish_models(storage: str, saliency: str, seed: int) -> tuple[str, str]:
    """A random-weight GESTALT model (ResNet-18 + map autoencoder) and VAAL sampler."""
    import torch

    from gestalt_al.distributed.registry import ModelRegistry
    from gestalt_al.latents import MapAutoencoder, SaliencyLatentEncoder
    from gestalt_al.models import ModelConfig, build_model
    from gestalt_al.mvaal import MVAALConfig
    from gestalt_al.mvaal.train import MVAALModels
    from gestalt_al.saliency import canonize
    from gestalt_al.service.models import GestaltModel, SamplerModel

    torch.manual_seed(seed)
    config = ModelConfig(arch="resnet18", num_classes=K, image_size=IMAGE_SIZE, in_channels=1)
    net = build_model(config).eval()
    encoder = SaliencyLatentEncoder(canonize(net), saliency, MapAutoencoder(LATENT_DIM))  # type: ignore[arg-type]
    registry = ModelRegistry(storage)
    model_id = GestaltModel(config, encoder, net.state_dict()).publish(registry, 0)
    sampler_config = MVAALConfig(image_size=32, aux_channels=0, width=8, latent_dim=LATENT_DIM)
    sampler = MVAALModels.create(sampler_config, seed=seed)
    sampler_id = SamplerModel(sampler_config, sampler.vae, sampler.discriminator).publish(
        registry, 0
    )
    return model_id, sampler_id


def write_pools(workdir: Path, n: int, shard_size: int, seed: int) -> tuple[str, str, list[str]]:
    """The measured pool and the warm-up pool as shard folders; returns their uris and ids."""
    from gestalt_al.service.pool import write_pool

    rng = np.random.default_rng(seed)
    ids = [f"img-{i:07d}" for i in range(n)]
    chunks = range(0, n, shard_size)
    images = np.concatenate([
        blob_images(rng, min(shard_size, n - start))
        for start in tqdm(chunks, desc="drawing pool images", unit="shard")
    ])  # fmt: skip
    pool_uri, warm_uri = str(workdir / "pool"), str(workdir / "warm")
    write_pool(open_store(pool_uri), "", ids, images, LABEL_NAMES, shard_size)
    warm_ids = [f"warm-{i:04d}" for i in range(WARM_SAMPLES)]
    warm_images = blob_images(rng, WARM_SAMPLES)
    write_pool(open_store(warm_uri), "", warm_ids, warm_images, LABEL_NAMES, WARM_SAMPLES)
    return pool_uri, warm_uri, ids


def run_round(
    client: Any, pool_id: str, model_id: str, sampler_id: str, timeout: float
) -> tuple[float, Any]:
    """StartRound, then poll GetRound every 0.5 s until DONE; the client's seconds."""
    from gestalt_al.v1 import active_learning_pb2 as pb

    started = time.perf_counter()
    record = client.start_round(pool_id, model_id, sampler_id)
    tty = sys.stderr.isatty()
    with tqdm(
        total=record.shards_total, desc=f"round {pool_id}", unit="shard",
        mininterval=0.5 if tty else 20, maxinterval=20,
    ) as bar:  # fmt: skip
        while record.state not in (pb.ROUND_STATE_DONE, pb.ROUND_STATE_FAILED):
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"round {record.round_id} not done after {timeout} s")
            time.sleep(0.5)
            record = client.get_round(record.round_id)
            bar.update(record.shards_done - bar.n)
    seconds = time.perf_counter() - started
    if record.state != pb.ROUND_STATE_DONE:
        raise RuntimeError(f"round {record.round_id} failed: {record.message}")
    return seconds, record


def service_part(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import ray

    from actors.ranking import ACTOR_NAME
    from gestalt_al.client import ServiceClient
    from services.app import NAMESPACE, ServiceConfig, deploy, shutdown

    storage = str(workdir / "service")
    model_id, sampler_id = publish_models(storage, args.saliency, args.seed)
    pool_uri, warm_uri, ids = write_pools(workdir, args.num_samples, args.shard_size, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    chosen = rng.choice(args.num_samples, size=args.labeled, replace=False)
    labels = random_labels(rng, args.labeled)
    submitted = [(ids[i], labels[j].tolist()) for j, i in enumerate(chosen)]

    # "local": a new cluster even when another Ray runs on this machine (ray.init would join it)
    ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False)
    rows: list[Row] = []
    try:
        for replicas in args.replicas:
            print(f"\n--- {replicas} SaliencyLatents replica(s) ---", flush=True)
            started = time.perf_counter()
            deploy(
                ServiceConfig(
                    storage=storage,
                    grpc_port=args.grpc_port,
                    http_port=args.grpc_port + 1,
                    latent_replicas=replicas,
                    sampler_replicas=1,
                    cpus_per_replica=args.cpus_per_replica,
                    gpus_per_replica=args.use_gpu,
                )
            )
            deploy_s = time.perf_counter() - started
            client = ServiceClient(f"127.0.0.1:{args.grpc_port}", timeout=600)
            client.register_pool(f"warm-r{replicas}", warm_uri)
            warm_s, _ = run_round(client, f"warm-r{replicas}", model_id, sampler_id, 600)

            pool_id = f"bench-r{replicas}"
            started = time.perf_counter()
            client.register_pool(pool_id, pool_uri)
            register_s = time.perf_counter() - started
            client.submit_labels(pool_id, submitted)
            cpu_before = replica_cpu_seconds()
            with RssSampler(ranking_actor_pid()) as rss:
                seconds, record = run_round(
                    client, pool_id, model_id, sampler_id, args.round_timeout
                )
            cpu_after = replica_cpu_seconds()
            on_gpu = gpu_memory_mib()
            replica_gpu = [on_gpu.get(pid, 0) for pid in sorted(cpu_after)]
            replica_cpu = sorted(
                (cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after), reverse=True
            )
            started = time.perf_counter()
            top = client.selection(record.round_id, "gestalt_node", 100)
            selection_s = time.perf_counter() - started
            assert len(top) == 100
            stages = dict(record.stage_seconds)
            rows.append({
                "replicas": replicas,
                "end_to_end_s": seconds,
                "samples_per_s": args.num_samples / seconds,
                "stage_seconds": stages,
                "num_candidates": record.num_candidates,
                "strategies": list(record.strategies),
                "latent_replica_cpu_s": replica_cpu,
                "latent_replica_gpu_mib": replica_gpu,
                "ranking_actor_rss_before_mb": rss.before / MB,
                "ranking_actor_rss_peak_mb": rss.peak / MB,
                "deploy_s": deploy_s,
                "warmup_round_s": warm_s,
                "register_pool_s": register_s,
                "first_selection_s": selection_s,
            })  # fmt: skip
            client.close()
        # Not shut down between counts: after serve.shutdown() and a new deploy in the same
        # cluster, rounds failed (Ray Data workers kept a handle to the killed controller).
        shutdown()
    finally:
        with contextlib.suppress(ValueError):  # not created when the first deploy failed
            ray.kill(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE))
        ray.shutdown()
    first = rows[0]
    for row in rows:
        row["speedup_vs_first"] = first["end_to_end_s"] / row["end_to_end_s"]
    return {
        "model_id": model_id,
        "sampler_id": sampler_id,
        "rows": rows,
    }


# --- part 2: ranking alone ---------------------------------------------------------------
def write_ranking_store(root: str, n: int, shard_size: int, seed: int) -> list[str]:
    """Random latents through ``RoundResults.write`` (FAISS index + weights per shard)."""
    results = RoundResults(open_store(root), "bench")
    rng = np.random.default_rng(seed)
    names, start = [], 0
    counts = shard_counts(n, shard_size)
    for shard, count in enumerate(tqdm(counts, desc="writing ranking shards", unit="shard")):
        name = f"{start:012d}"
        results.write(
            name,
            ShardScores(
                indices=np.arange(start, start + count, dtype=np.int64),
                latents=synth_latents(seed, shard, count),
                uncertainty=rng.random(count),
                sampler_scores=rng.random(count),
            ),
        )
        names.append(name)
        start += count
    return names


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _peak_mb() -> float:
    """VmHWM, the peak RSS of this process image (``ru_maxrss`` would also count the parent's
    RSS at fork, which Linux carries across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _load_kernels() -> None:
    """Compile (or load from numba's cache) the rank kernels before anything is timed."""
    tiny = synth_latents(2**31, 0, 16)
    for variant in GESTALT_STRATEGIES.values():
        gestalt_scores(tiny, variant, tiny if variant == "weighted_node" else None)


def streamed_child(root: str, names: list[str], labeled: np.ndarray, n: int) -> Row:
    """What the ranking actor runs: ``round_scores`` over the stored shards."""
    _load_kernels()
    results = RoundResults(open_store(root), "bench")
    before = _rss_mb()
    seconds, scores = best_of(
        1, lambda: round_scores(lambda: results.iter_weights(names), labeled, n, "vaal", "bench")
    )
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
        "gestalt": {name: scores.scores[name] for name in GESTALT_STRATEGIES},
    }


def in_memory_child(seed: int, counts: list[int], labeled: np.ndarray) -> Row:
    """The baseline: ``gestalt_scores`` on the whole latents array held in memory."""
    _load_kernels()
    latents = np.concatenate([synth_latents(seed, s, c) for s, c in enumerate(counts)])
    keep = np.ones(len(latents), dtype=bool)
    keep[labeled] = False
    pool, train = latents[keep], latents[np.sort(labeled)]
    del latents
    before = _rss_mb()

    def run() -> dict[str, np.ndarray]:
        return {
            name: gestalt_scores(pool, variant, train if variant == "weighted_node" else None)
            for name, variant in GESTALT_STRATEGIES.items()
        }

    seconds, scores = best_of(1, run)
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
        "gestalt": scores,
    }


def in_child(function: Callable[..., Row], *args: object) -> Row:
    """Run in a fresh spawned process, so its peak RSS is this measurement's alone."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def ranking_part(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n, seed = args.ranking_samples, args.seed + 2
    root = str(workdir / "ranking")
    started = time.perf_counter()
    names = write_ranking_store(root, n, args.shard_size, seed)
    write_s = time.perf_counter() - started
    stored_mb = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file()) / MB
    labeled = np.sort(np.random.default_rng(seed).choice(n, size=args.labeled, replace=False))
    print("ranking: round_scores over the stored shards (subprocess) ...", flush=True)
    streamed = in_child(streamed_child, root, names, labeled, n)
    print("ranking: gestalt_scores on the in-memory array (subprocess) ...", flush=True)
    memory = in_child(in_memory_child, seed, shard_counts(n, args.shard_size), labeled)
    for name in GESTALT_STRATEGIES:
        np.testing.assert_allclose(streamed["gestalt"][name], memory["gestalt"][name], atol=1e-9)
    shutil.rmtree(root)
    del streamed["gestalt"], memory["gestalt"]
    return {
        "samples": n,
        "shards": len(names),
        "labeled": args.labeled,
        "latent_shape": [K, LATENT_DIM],
        "write": "RoundResults.write (FAISS IndexIDMap2 + weights.npz per shard)",
        "write_s": write_s,
        "stored_mb": stored_mb,
        "memory_measure": "VmHWM (peak RSS) of a fresh spawned process per measurement",
        "streamed_round_scores": streamed,
        "in_memory_gestalt_scores": memory,
        "scores_equal": True,
        "time_ratio_streamed_vs_in_memory": streamed["seconds"] / memory["seconds"],
        "peak_rss_ratio_streamed_vs_in_memory": streamed["peak_rss_mb"] / memory["peak_rss_mb"],
        "peak_growth_ratio_streamed_vs_in_memory": (
            (streamed["peak_rss_mb"] - streamed["rss_before_mb"])
            / (memory["peak_rss_mb"] - memory["rss_before_mb"])
        ),
    }


# --- output ------------------------------------------------------------------------------
def print_tables(n: int, service: dict[str, Any] | None, ranking: dict[str, Any] | None) -> None:
    line = f"{'stage':<40} {'replicas':>8} {'seconds':>9} {'samples/s':>10} {'ratio':>7}"
    if service:
        rows = service["rows"]
        stages: list[tuple[str, Callable[[Row], float]]] = [
            ("end to end (StartRound -> DONE)", lambda r: r["end_to_end_s"]),
            ("Ray Data scoring wall", lambda r: r["stage_seconds"].get("scoring_wall", 0.0)),
            ("  Ray Data read (sum over shards)", lambda r: r["stage_seconds"].get("read", 0.0)),
            ("  Serve scoring (sum over shards)", lambda r: r["stage_seconds"].get("score", 0.0)),
            ("  store writes (sum over shards)", lambda r: r["stage_seconds"].get("write", 0.0)),
            ("global ranking (wall)", lambda r: r["stage_seconds"].get("ranking", 0.0)),
        ]
        print(f"\nservice round, N = {n} (ratio: seconds with the first count / these seconds)")
        print(line)
        print("-" * len(line))
        for stage, get in stages:
            for row in rows:
                seconds, base = get(row), get(rows[0])
                ratio = base / seconds if seconds else float("nan")
                print(
                    f"{stage:<40} {row['replicas']:>8} {seconds:>9.2f} "
                    f"{n / seconds if seconds else float('nan'):>10.1f} {ratio:>6.2f}x"
                )
        for row in rows:
            print(
                f"ranking actor RSS, {row['replicas']} replica(s): "
                f"{row['ranking_actor_rss_before_mb']:.0f} MB before, "
                f"{row['ranking_actor_rss_peak_mb']:.0f} MB peak; warm-up round "
                f"{row['warmup_round_s']:.1f} s, RegisterPool {row['register_pool_s']:.1f} s; "
                "CPU s per latent replica in the round: "
                + ", ".join(f"{c:.0f}" for c in row["latent_replica_cpu_s"])
                + "; GPU MiB held per latent replica: "
                + ", ".join(str(m) for m in row["latent_replica_gpu_mib"])
            )
    if ranking:
        m = ranking["samples"]
        print(
            f"\nranking alone, {m} samples in {ranking['shards']} shards "
            f"(written in {ranking['write_s']:.1f} s, {ranking['stored_mb']:.0f} MB)"
        )
        head = (
            f"{'step':<40} {'seconds':>9} {'samples/s':>10} {'peak RSS MB':>12} "
            f"{'before MB':>10} {'ratio':>7}"
        )
        print(head)
        print("-" * len(head))
        s, b = ranking["streamed_round_scores"], ranking["in_memory_gestalt_scores"]
        ratio_s = ranking["time_ratio_streamed_vs_in_memory"]
        for name, r, ratio in (
            ("round_scores, streamed from the store", s, ratio_s),
            ("gestalt_scores x3 variants, in memory", b, 1.0),
        ):
            print(
                f"{name:<40} {r['seconds']:>9.2f} {m / r['seconds']:>10.0f} "
                f"{r['peak_rss_mb']:>12.0f} {r['rss_before_mb']:>10.0f} {ratio:>6.2f}x"
            )
        print(
            "ratio: seconds / in-memory seconds. Peak RSS streamed / in memory: "
            f"{ranking['peak_rss_ratio_streamed_vs_in_memory']:.2f} (growth over 'before': "
            f"{ranking['peak_growth_ratio_streamed_vs_in_memory']:.2f}); 'before' = RSS after "
            "imports and, in memory, the latents array"
        )


def write_results(path: Path, label: str, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[label] = entry
    path.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"\nwrote {path} [{label!r}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=100_000)
    parser.add_argument("--shard-size", type=int, default=2_000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--cpus-per-replica",
        type=float,
        default=1.0,
        help="per SaliencyLatents replica; the sampler replica takes half",
    )
    parser.add_argument(
        "--use-gpu",
        type=float,
        default=0.0,
        metavar="GPUS",
        help="gpus_per_replica (each latent replica and the sampler replica)",
    )
    parser.add_argument(
        "--saliency", choices=["deep_taylor", "grad_cam", "gradient"], default="deep_taylor"
    )
    parser.add_argument("--labeled", type=int, default=200)
    parser.add_argument("--ranking-samples", type=int, default=1_000_000)
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--skip-ranking", action="store_true")
    parser.add_argument("--grpc-port", type=int, default=50071)
    parser.add_argument("--round-timeout", type=float, default=3600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where pools and stores go (default: a temp folder)")
    parser.add_argument("--label", help="key in the results file (default: local-cpu / device)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.labeled < 2 or args.labeled >= min(args.num_samples, args.ranking_samples):
        parser.error("--labeled must be >= 2 and below the pool sizes")
    cpus = cpu_count()
    need = (max(args.replicas) + 0.5) * args.cpus_per_replica + 0.25
    if not args.skip_service and need > cpus:
        parser.error(
            f"{max(args.replicas)} replicas x {args.cpus_per_replica} CPUs (+ half of one for the "
            f"sampler, + 0.25 for a Ray Data task) need {need} CPUs, this machine has {cpus}"
        )
    if args.use_gpu * (max(args.replicas) + 1) > 1:
        parser.error("--use-gpu: (replicas + 1 sampler) x GPUS must fit one GPU")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    description = machine()
    label = args.label or ("device" if description["gpu"] else "local-cpu")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gestalt-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        service = None if args.skip_service else service_part(args, workdir)
        ranking = None if args.skip_ranking else ranking_part(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{description}")
    print_tables(args.num_samples, service, ranking)
    config = {
        "num_samples": args.num_samples, "shard_size": args.shard_size,
        "replicas": args.replicas, "cpus_per_replica": args.cpus_per_replica,
        "gpus_per_replica": args.use_gpu, "saliency": args.saliency, "labeled": args.labeled,
        "image": [IMAGE_SIZE, IMAGE_SIZE], "classes": K, "latent_dim": LATENT_DIM,
        "ranking_samples": args.ranking_samples,
        "models": "random weights: ResNet-18 (28 px, 1 channel, K=14) + map autoencoder "
        "(D=16); VAAL sampler (32 px, width 8, latent 16). Throughput only.",
    }  # fmt: skip
    write_results(
        args.results,
        label,
        {"machine": description, "config": config, "service": service, "ranking": ranking},
    )


if __name__ == "__main__":
    main()
