"""``gestalt-al loop``: continuous AL rounds through the service, simulated on the bundled NIH
sample (the oracle answers each query with the ground truth).

Local Ray cluster -> the pool written as shards -> Serve application with gRPC ingress -> a
gRPC client registers the pool, starts the loop and follows it round by round -> the
per-round table (labels, validation and test macro ROC-AUC) and where the query lists are ->
clean shutdown. The loop's state stays in the store (``--storage``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import grpc
import ray

from gestalt_al.client import ServiceClient
from gestalt_al.data import bundled_nih_path, load_dataset
from gestalt_al.service.pool import write_pool
from gestalt_al.storage import open_store
from gestalt_al.v1 import active_learning_pb2 as pb
from services.app import APP_NAME, ServiceConfig, deploy, shutdown

POOL_ID = "nih"


def run_loop_demo(args: argparse.Namespace) -> int:
    storage = args.storage or tempfile.mkdtemp(prefix="gestalt-loop-")
    data = load_dataset(bundled_nih_path(), "train", args.images_key)
    count = min(args.pool_size or len(data), len(data))
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        pool_uri = f"{storage.rstrip('/')}/pool-data/{POOL_ID}"
        write_pool(open_store(pool_uri), "", list(data.ids[:count]), data.images[:count],
                   data.label_names, args.shard_size)  # fmt: skip
        # Retraining runs while Serve holds its replicas: both must fit the cluster's CPUs,
        # or Ray Train waits for resources forever.
        deploy(ServiceConfig(storage, args.grpc_port, args.http_port, cpus_per_replica=0.5))
        client = ServiceClient(f"127.0.0.1:{args.grpc_port}", APP_NAME)
        client.register_pool(POOL_ID, pool_uri)
        loop = _start(client,
            POOL_ID, str(bundled_nih_path()), strategy=args.strategy, budget=args.budget,
            initial_labeled=args.initial_labeled, max_rounds=args.max_rounds,
            max_labels=args.max_labels, images_key=args.images_key, test_split="test",
            seed=args.seed, model={
                "epochs": args.epochs, "sampler_epochs": args.sampler_epochs,
                "saliency": args.saliency, "workers": args.workers,
                "cpus_per_worker": args.cpus_per_worker, "image_size": args.image_size,
            },
        )  # fmt: skip
        print(f"loop {loop.loop_id} on {count} images; state in {storage}")
        finished = client.wait_loop(loop.loop_id)
        client.close()
    finally:
        shutdown()
        ray.shutdown()
    _print_rounds(finished)
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    return 0 if finished.state == pb.LOOP_STATE_FINISHED else 1


def _start(client: ServiceClient, *args: Any, **kwargs: Any) -> pb.Loop:
    """StartLoop; a refused config becomes a ValueError (the command prints its message)."""
    try:
        return client.start_loop(*args, **kwargs)
    except grpc.RpcError as exc:
        raise ValueError(f"StartLoop refused: {exc.details()}") from exc


def _print_rounds(loop: pb.Loop) -> None:
    state = pb.LoopState.Name(loop.state).removeprefix("LOOP_STATE_").lower()
    print(f"\nloop {loop.loop_id}: {state} ({loop.stop_reason or loop.message})")
    print(f"{'round':>5} {'labeled':>7} {'val AUC':>8} {'test AUC':>8} {'queried':>7}  model")
    for r in loop.rounds:
        val = f"{r.val_macro_auc:.3f}" if r.HasField("val_macro_auc") else "-"
        test = f"{r.test_macro_auc:.3f}" if r.HasField("test_macro_auc") else "-"
        print(f"{r.round:>5} {r.num_labeled:>7} {val:>8} {test:>8} {r.num_queried:>7}  "
              f"{r.model_id}")  # fmt: skip
    listed = [r.query_uri for r in loop.rounds if r.query_uri]
    if listed:
        print(f"\nquery lists (query.json, query.csv, label_studio.json, images/): {listed[0]} ...")
