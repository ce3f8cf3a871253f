"""Load benchmark: a bounded load test of the gRPC service from a second process on loopback.

Why: a service that answers one client is not yet one that answers fifty. This checks, with a
fixed number of requests per leg, that concurrent clients get no errors, measures their
latency and throughput against one client in the same run, and shows what happens when far
more clients come than the ingress can take: Serve's defaults (``max_ongoing_requests=5``,
``max_queued_requests=-1``) hold the excess in the proxy without bound, while a bound on the
ingress deployment, or the TLS gateway's ``--max-concurrent-rpcs``, refuses it at once with
RESOURCE_EXHAUSTED (back-pressure).

How: this process starts its own local Ray cluster (``--num-cpus``) and deploys the service
(``services.app.deploy``) on a small real pool, the first ``--pool-size`` images of the
bundled NIH ChestX-ray14 sample, with random-weight models (``service.publish_models``: a
ResNet-18 with its map autoencoder and a VAAL sampler; the scores mean nothing, the answers'
sizes and code paths are real). It registers the pool, submits ``--labeled`` seed labels (the
data set's) and runs one round to DONE. Each leg then runs ``load_client.py`` in a SECOND
process: ``clients`` concurrent ``grpc.aio`` clients, each on its own connection, send
``--requests`` RPCs in all from one seeded read mix (GetRound; GetSelection, budget 10 in two
pages; GetNeighbours, k 5; StreamSelection, budget 10; identical resubmissions of seed labels,
answered ``unchanged``), after a warm-up. Legs, with the ingress as deployed (``api.py``):

1. ``1 client``: the baseline of every ratio;
2. ``--clients`` clients (default 50);
3. with ``--overload-as-deployed`` only: ``--overload-clients`` (300) clients (slow while the
   ingress has Serve's defaults: the excess waits in the proxy's router, retried with backoff);

then with the ingress redeployed in place with ``max_ongoing_requests`` /
``max_queued_requests`` = ``--bound-ongoing`` / ``--bound-queued`` (``ServiceConfig``'s
``ingress_max_*``):

4. ``--clients`` clients, directly and through the TLS gateway (``python -m services.gateway``
   with a throwaway CA from ``tests/certs.py`` and ``--max-concurrent-rpcs``
   ``--gateway-max-rpcs``; ``--no-gateway`` leaves the gateway legs out);
5. ``--overload-clients`` clients, directly (Serve's refusals) and through the gateway (its
   refusals); refused clients back off (``load_client.py``).

Per leg: requests (``--overload-requests`` in the overload legs), errors, RESOURCE_EXHAUSTED
refusals, p50 / p90 / p99 / max latency of the OK answers and of the refusals, throughput
(answers/s), goodput (OK/s), and the ratios of goodput and p50 to the 1-client leg. Legs with
at most ``--clients`` clients must have no non-OK answer and the bounded overload legs none
but refusals, else the exit code is 1 (after the numbers are written). The client process
shares the cores with the cluster (its CPU seconds and the load average are recorded per
leg). Merges its numbers into ``benchmarks/results/load.json`` under ``--label``. About 5
minutes on 2 cores, most of it the cluster, the deployment and the round (and the 50-client
leg while the ingress has Serve's defaults: about 10 requests/s):

    .venv/bin/python benchmarks/load.py [--num-cpus 2] [--clients 50] [--requests 1000]
        [--overload-clients 300] [--bound-ongoing 64] [--bound-queued 64]
        [--overload-as-deployed] [--deployed-ongoing 5 --deployed-queued -1] [--no-gateway]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from load_client import MIX, LoadPlan
from service import cpu_count, machine, publish_models, run_round, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(REPO))  # the repository's test helpers: free ports, a throwaway CA
from tests.servers import free_port, wait_for_port  # noqa: E402

if TYPE_CHECKING:
    from services.app import ServiceConfig

RESULTS = Path(__file__).parent / "results" / "load.json"
CLIENT = Path(__file__).with_name("load_client.py")
REFUSED = "RESOURCE_EXHAUSTED"
Row = dict[str, Any]


@dataclass(frozen=True)
class Leg:
    name: str
    clients: int
    bounded: bool = False  # after the ingress is redeployed with --bound-ongoing/--bound-queued
    gateway: bool = False  # through the TLS gateway instead of Serve's proxy directly
    overload: bool = False  # RESOURCE_EXHAUSTED allowed (no other code)
    gated: bool = True  # errors fail the run


@dataclass(frozen=True)
class Target:
    """Where a leg's clients connect, and what the round answers with."""

    direct: str
    gateway: str  # "" without one
    ca_file: str
    round_id: str
    pool_id: str
    strategies: list[str]
    sample_ids: list[str]
    seed_labels: list[tuple[str, list[float]]]


# --- the service -----------------------------------------------------------------------------
def write_nih_pool(uri: str, size: int, shard_size: int) -> tuple[list[str], np.ndarray]:
    """The first ``size`` training images of the bundled NIH sample as a pool; their ids and
    ground-truth labels."""
    from gestalt_al.data import bundled_nih_path, load_dataset
    from gestalt_al.service.pool import write_pool
    from gestalt_al.storage import open_store

    data = load_dataset(bundled_nih_path(), "train", "images_64")
    assert data.labels is not None
    if size > len(data.ids):
        raise ValueError(f"--pool-size {size}: the bundled NIH sample has {len(data.ids)}")
    ids = [str(i) for i in data.ids[:size]]
    write_pool(open_store(uri), "", ids, data.images[:size], data.label_names, shard_size)
    return ids, data.labels[:size]


def ingress_limits() -> dict[str, int]:
    """The ingress deployment's ``max_ongoing_requests`` and ``max_queued_requests`` as Serve
    runs them now (from the controller's details; empty when Serve does not say)."""
    from ray.serve.context import _get_global_client

    from actors.loop_runner import INGRESS
    from services.app import APP_NAME

    client = _get_global_client()
    if client is None:
        return {}
    try:
        details = client.get_serve_details()
        config = details["applications"][APP_NAME]["deployments"][INGRESS]["deployment_config"]
        return {k: int(config[k]) for k in ("max_ongoing_requests", "max_queued_requests")}
    except (KeyError, TypeError, AttributeError):
        return {}


@contextlib.contextmanager
def tls_gateway(upstream: str, workdir: Path, max_rpcs: int) -> Iterator[tuple[str, str]]:
    """``python -m services.gateway`` in front of ``upstream`` with a throwaway CA's server
    certificate for 127.0.0.1; yields its address and the CA file."""
    from tests.certs import CertificateAuthority

    ca = CertificateAuthority("gestalt load benchmark CA")
    cert, key = ca.issue("localhost", sans=["localhost", "127.0.0.1"]).write(workdir, "gateway")
    port = free_port()
    command = [sys.executable, "-m", "services.gateway", "--listen", f"127.0.0.1:{port}",
               "--upstream", upstream, "--cert", str(cert), "--key", str(key),
               "--max-concurrent-rpcs", str(max_rpcs), "--log-level", "WARNING"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO)
    try:
        wait_for_port(port, process, seconds=60)
        yield f"127.0.0.1:{port}", str(ca.write(workdir))
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- the legs --------------------------------------------------------------------------------
def run_leg(
    leg: Leg, target: Target, requests: int, args: argparse.Namespace, workdir: Path, desc: str
) -> dict[str, Any]:
    """One leg in the client process; its raw result (rows, wall and CPU seconds)."""
    plan = LoadPlan(
        target=target.gateway if leg.gateway else target.direct,
        clients=leg.clients,
        requests=requests,
        round_id=target.round_id,
        pool_id=target.pool_id,
        strategies=target.strategies,
        sample_ids=target.sample_ids,
        seed_labels=target.seed_labels,
        deadline_s=args.deadline,
        refusal_backoff_s=args.refusal_backoff_ms / 1000,
        seed=args.seed,
        ca_file=target.ca_file if leg.gateway else "",
        desc=desc,
    )
    plan_file, out_file = workdir / "plan.json", workdir / "result.json"
    plan.dump(plan_file)
    out_file.unlink(missing_ok=True)
    command = [sys.executable, str(CLIENT), "--plan", str(plan_file), "--out", str(out_file)]
    subprocess.run(command, check=True, timeout=args.leg_timeout)
    result: dict[str, Any] = json.loads(out_file.read_text())
    return result


def _ms(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return dict.fromkeys(("p50_ms", "p90_ms", "p99_ms", "max_ms"), float("nan"))
    p50, p90, p99 = np.percentile(np.array(latencies) * 1000, [50, 90, 99])
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max(latencies) * 1000}


def summarize(leg: Leg, result: dict[str, Any], limits: dict[str, int]) -> Row:
    rows = [(str(m), str(c), float(s)) for m, c, s in result["rows"]]
    codes = Counter(code for _, code, _ in rows)
    allowed = {"OK", REFUSED} if leg.overload else {"OK"}
    wall = float(result["wall_s"])
    ok = [s for _, c, s in rows if c == "OK"]
    methods = {
        method: {"requests": sum(m == method for m, _, _ in rows),
                 **_ms([s for m, c, s in rows if m == method and c == "OK"])}
        for method in MIX
    }  # fmt: skip
    return {
        "leg": leg.name,
        "clients": leg.clients,
        "bounded": leg.bounded,
        "gateway": leg.gateway,
        "overload": leg.overload,
        "gated": leg.gated,
        "ingress_limits": limits,
        "requests": len(rows),
        "ok": codes["OK"],
        "refused": codes[REFUSED],
        "errors": sum(n for code, n in codes.items() if code not in allowed),
        "codes": dict(codes),
        **_ms(ok),
        "refused_latency": _ms([s for _, c, s in rows if c == REFUSED]),
        "wall_s": wall,
        "requests_per_s": len(rows) / wall,
        "ok_per_s": len(ok) / wall,
        "connect_s": result["connect_s"],
        "client_cpu_s": result["cpu_s"],
        "methods": methods,
    }


def prepare(
    args: argparse.Namespace, workdir: Path
) -> tuple[ServiceConfig, Target, dict[str, Any]]:
    """Deploy the service, register the pool, submit the seed labels, run one round; the
    config deployed, where the clients go, and facts for the results."""
    from gestalt_al.client import ServiceClient
    from services.app import ServiceConfig, deploy

    storage = str(workdir / "service")
    model_id, sampler_id = publish_models(storage, args.saliency, args.seed)
    ids, labels = write_nih_pool(str(workdir / "pool"), args.pool_size, args.shard_size)
    config = ServiceConfig(storage, grpc_port=free_port(), http_port=free_port(),
                           cpus_per_replica=args.cpus_per_replica,
                           ingress_max_ongoing_requests=args.deployed_ongoing,
                           ingress_max_queued_requests=args.deployed_queued)  # fmt: skip
    started = time.perf_counter()
    deploy(config)
    deploy_s = time.perf_counter() - started
    direct = f"127.0.0.1:{config.grpc_port}"
    client = ServiceClient(direct, timeout=600)
    try:
        pool_id = "nih-load"
        client.register_pool(pool_id, str(workdir / "pool"))
        seed_labels = [(ids[i], labels[i].tolist()) for i in range(args.labeled)]
        client.submit_labels(pool_id, seed_labels)
        round_s, record = run_round(client, pool_id, model_id, sampler_id, args.round_timeout)
        chosen = client.selection(record.round_id, "random", min(50, record.num_candidates))
    finally:
        client.close()
    target = Target(
        direct=direct, gateway="", ca_file="", round_id=record.round_id, pool_id=pool_id,
        strategies=list(record.strategies), sample_ids=[s.sample_id for s in chosen],
        seed_labels=seed_labels,
    )  # fmt: skip
    facts = {"deploy_s": deploy_s, "round_s": round_s, "round_id": record.round_id,
             "strategies": list(record.strategies)}  # fmt: skip
    return config, target, facts


def legs(args: argparse.Namespace) -> list[Leg]:
    many, more = args.clients, args.overload_clients
    found = [Leg("1 client", 1), Leg(f"{many} clients", many)]
    if args.overload_as_deployed:
        found.append(Leg(f"{more} clients", more, overload=True, gated=False))
    found.append(Leg(f"{many} clients", many, bounded=True))
    if not args.no_gateway:
        found.append(Leg(f"{many} clients via TLS gateway", many, bounded=True, gateway=True))
    found.append(Leg(f"{more} clients", more, bounded=True, overload=True))
    if not args.no_gateway:
        found.append(Leg(f"{more} clients via TLS gateway", more, bounded=True, gateway=True,
                         overload=True))  # fmt: skip
    return found


def run_legs(
    args: argparse.Namespace, workdir: Path, config: ServiceConfig, target: Target
) -> list[Row]:
    from services.app import deploy

    planned = legs(args)
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        if not args.no_gateway:
            gateway, ca_file = stack.enter_context(
                tls_gateway(target.direct, workdir, args.gateway_max_rpcs)
            )
            target = dataclasses.replace(target, gateway=gateway, ca_file=ca_file)
        # below Serve's default max_ongoing_requests (5): nothing waits in the proxy
        warm = Leg("warm-up", 4, gateway=not args.no_gateway)
        run_leg(warm, target, args.warmup_requests, args, workdir, "warm-up")
        bounded = False
        for number, leg in enumerate(planned, 1):
            if leg.bounded and not bounded:
                print(f"redeploying the ingress with max_ongoing_requests {args.bound_ongoing}, "
                      f"max_queued_requests {args.bound_queued}", flush=True)  # fmt: skip
                deploy(dataclasses.replace(
                    config, ingress_max_ongoing_requests=args.bound_ongoing,
                    ingress_max_queued_requests=args.bound_queued,
                ))  # fmt: skip
                bounded = True
            limits = ingress_limits()
            requests = (
                args.baseline_requests if leg.clients == 1
                else args.overload_requests if leg.overload
                else args.requests
            )  # fmt: skip
            desc = f"leg {number}/{len(planned)}: {leg.name}, ingress {_limits(limits)}"
            load_before = os.getloadavg()[0]
            result = run_leg(leg, target, requests, args, workdir, desc)
            rows.append(summarize(leg, result, limits))
            rows[-1]["loadavg_1min"] = [load_before, os.getloadavg()[0]]
    base = rows[0]
    for row in rows:
        row["ok_per_s_vs_1_client"] = row["ok_per_s"] / base["ok_per_s"]
        row["p50_vs_1_client"] = row["p50_ms"] / base["p50_ms"]
    return rows


def gateway_overhead(rows: list[Row]) -> dict[str, float]:
    """The bounded --clients leg through the gateway against the same leg direct."""
    direct = [r for r in rows if r["bounded"] and not r["overload"] and not r["gateway"]]
    via = [r for r in rows if r["bounded"] and not r["overload"] and r["gateway"]]
    if not (direct and via):
        return {}
    return {
        "p50_ratio": via[0]["p50_ms"] / direct[0]["p50_ms"],
        "p99_ratio": via[0]["p99_ms"] / direct[0]["p99_ms"],
        "throughput_ratio": via[0]["ok_per_s"] / direct[0]["ok_per_s"],
    }


def _limits(limits: dict[str, int]) -> str:
    if not limits:
        return "?"
    return f"{limits['max_ongoing_requests']}/{limits['max_queued_requests']}"


# --- output ----------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    head = (
        f"{'leg':<34} {'ingress':>7} {'reqs':>5} {'OK':>5} {'refused':>7} {'errors':>6} "
        f"{'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'req/s':>6} {'OK/s':>6} {'x OK/s':>7} "
        f"{'x p50':>6}"
    )
    print(
        "\nlatency: ms of the OK answers; ingress: max_ongoing_requests/max_queued_requests "
        "(-1: no bound); req/s: answers, refusals included; x: ratio to the 1-client leg"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['leg']:<34} {_limits(r['ingress_limits']):>7} {r['requests']:>5} {r['ok']:>5} "
            f"{r['refused']:>7} {r['errors']:>6} {r['p50_ms']:>7.1f} {r['p90_ms']:>7.1f} "
            f"{r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} {r['requests_per_s']:>6.1f} "
            f"{r['ok_per_s']:>6.1f} {r['ok_per_s_vs_1_client']:>6.2f}x "
            f"{r['p50_vs_1_client']:>5.2f}x"
        )
    for r in rows:
        where = f"{r['leg']}, ingress {_limits(r['ingress_limits'])}"
        if r["refused"]:
            refused = r["refused_latency"]
            print(
                f"{where}: {r['refused']} refused (RESOURCE_EXHAUSTED) in p50 "
                f"{refused['p50_ms']:.1f} / p99 {refused['p99_ms']:.1f} / max "
                f"{refused['max_ms']:.1f} ms"
            )
        if r["errors"]:
            print(f"{where}: ERRORS {r['codes']}" + ("" if r["gated"] else " (not gated)"))
    print("\np50 / p99 ms of the OK answers per method")
    print(f"{'leg':<34} {'ingress':>7} " + " ".join(f"{m:>17}" for m in MIX))
    for r in rows:
        cells = [f"{v['p50_ms']:.0f} / {v['p99_ms']:.0f}" for v in r["methods"].values()]
        print(f"{r['leg']:<34} {_limits(r['ingress_limits']):>7} "
              + " ".join(f"{c:>17}" for c in cells))  # fmt: skip
    overhead = gateway_overhead(rows)
    if overhead:
        print(
            f"\nTLS gateway / direct at the same load: p50 {overhead['p50_ratio']:.2f}x, "
            f"p99 {overhead['p99_ratio']:.2f}x, throughput {overhead['throughput_ratio']:.2f}x"
        )
    print(
        "client process CPU s / wall s / 1-min load average before, per leg: "
        + ", ".join(
            f"{r['client_cpu_s']:.1f}/{r['wall_s']:.1f}/{r['loadavg_1min'][0]:.0f}" for r in rows
        )
    )


def machine_facts() -> dict[str, Any]:
    grpc = importlib.import_module("grpc")
    return {
        **machine(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "loadavg_at_start": list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=cpu_count(), help="for ray.init")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000, help="RPCs per leg")
    parser.add_argument("--baseline-requests", type=int, default=500,
                        help="RPCs of the 1-client leg")  # fmt: skip
    parser.add_argument("--warmup-requests", type=int, default=100)
    parser.add_argument("--overload-clients", type=int, default=300)
    parser.add_argument("--overload-requests", type=int, default=2000,
                        help="RPCs per overload leg (most are refused quickly)")  # fmt: skip
    parser.add_argument("--deployed-ongoing", type=int, default=0,
                        help="the ingress's max_ongoing_requests in the first legs (0: as "
                        "services/api.py deploys it; 5: Serve's default)")  # fmt: skip
    parser.add_argument("--deployed-queued", type=int, default=0,
                        help="its max_queued_requests there (0: as deployed; -1: Serve's "
                        "default, no bound)")  # fmt: skip
    parser.add_argument("--overload-as-deployed", action="store_true",
                        help="also an overload leg before the ingress is bounded")  # fmt: skip
    parser.add_argument(
        "--bound-ongoing", type=int, default=64,
        help="the ingress's max_ongoing_requests in the bounded legs: at least --clients, or "
        "the excess waits in Serve's router (retried with backoff)",
    )  # fmt: skip
    parser.add_argument(
        "--bound-queued", type=int, default=64,
        help="the ingress's max_queued_requests in the bounded legs (-1: no bound); below "
        "--clients, a burst of arrivals can be refused while the replica has room",
    )  # fmt: skip
    parser.add_argument("--gateway-max-rpcs", type=int, default=64,
                        help="the gateway's --max-concurrent-rpcs")  # fmt: skip
    parser.add_argument("--refusal-backoff-ms", type=float, default=100,
                        help="a refused client's first backoff (doubled up to 2 s)")  # fmt: skip
    parser.add_argument("--no-gateway", action="store_true", help="leave the TLS legs out")
    parser.add_argument("--pool-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--labeled", type=int, default=24)
    parser.add_argument("--cpus-per-replica", type=float, default=0.5)
    parser.add_argument(
        "--saliency", choices=["deep_taylor", "grad_cam", "gradient"], default="grad_cam"
    )
    parser.add_argument("--deadline", type=float, default=60, help="per RPC, seconds")
    parser.add_argument("--leg-timeout", type=float, default=900, help="seconds")
    parser.add_argument("--round-timeout", type=float, default=900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", help="key in the results file (default: local-cpu / device)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    for name in ("num_cpus", "clients", "requests", "baseline_requests", "warmup_requests",
                 "overload_clients", "overload_requests", "bound_ongoing",
                 "gateway_max_rpcs"):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.bound_queued < 1 and args.bound_queued != -1:
        parser.error("--bound-queued must be >= 1, or -1 (no bound)")
    if not 10 + args.labeled <= args.pool_size:
        parser.error("--labeled must leave at least 10 unlabeled samples in --pool-size")
    if args.labeled < 4:
        parser.error("--labeled must be >= 4 (SubmitLabels resubmits 4 of them)")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from services.app import shutdown

    description = machine_facts()
    label = args.label or ("device" if description["gpu"] else "local-cpu")
    # "local": a new cluster even when another Ray runs on this machine (ray.init would join it)
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="gestalt-load-") as tmp:
            workdir = Path(tmp)
            config, target, facts = prepare(args, workdir)
            facts["ingress_as_deployed"] = ingress_limits()
            print(f"round {facts['round_id']} done in {facts['round_s']:.1f} s; ingress as "
                  f"deployed: {facts['ingress_as_deployed']}", flush=True)  # fmt: skip
            rows = run_legs(args, workdir, config, target)
            shutdown()
    finally:
        ray.shutdown()
    description["loadavg_at_end"] = list(os.getloadavg())
    print(f"\n{description}")
    print_table(rows)
    settings = {k: v for k, v in vars(args).items() if k not in ("label", "results")}
    write_results(args.results, label, {
        "machine": description,
        "command": shlex.join([sys.executable, *sys.argv]),
        "config": {**settings, "mix": MIX, "pool": "bundled NIH ChestX-ray14 sample (train, 64 px)",
                   "models": "random weights: ResNet-18 (28 px, K=14) + map autoencoder (D=16); "
                             "VAAL sampler"},
        "service": facts,
        "gateway_vs_direct": gateway_overhead(rows),
        "legs": rows,
    })  # fmt: skip
    failed = [f"{r['leg']} ({_limits(r['ingress_limits'])})" for r in rows
              if r["gated"] and r["errors"]]  # fmt: skip
    if failed:
        sys.exit(f"errors in {failed}: see the codes above")


if __name__ == "__main__":
    main()
