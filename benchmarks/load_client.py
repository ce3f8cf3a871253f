"""The client side of ``benchmarks/load.py``: one process, ``clients`` concurrent gRPC clients.

Run by ``load.py`` as a second process (never inside the service's Ray cluster), so client and
server share the machine's cores but not an interpreter:

    .venv/bin/python benchmarks/load_client.py --plan plan.json --out result.json

Each client has its own ``grpc.aio`` channel and its own TCP connection (a local subchannel
pool: channels with equal settings would otherwise share one connection). All channels connect
before the clock starts. The clients then draw operations from one shared, seeded schedule
until exactly ``requests`` RPCs are sent, so every leg sends the same mix:

- ``GetRound`` of the finished round (answer: DONE);
- ``GetSelection``, budget 10 in pages of 5: page 1, then page 2 with its token (two RPCs);
- ``GetNeighbours``, k = 5, of a sample the round ranked;
- ``StreamSelection``, budget 10, read to its end (one RPC, timed to the last message);
- ``SubmitLabels``: a few seed labels resubmitted unchanged (answer: 0 accepted, all unchanged).

Every RPC's method, status code and latency (seconds) is recorded; an OK answer that is wrong
(not DONE, a page or stream of the wrong length, labels not ``unchanged``) is recorded with
the code ``BAD_ANSWER``. A client refused with RESOURCE_EXHAUSTED backs off before its next
operation, as a well-behaved client does: ``refusal_backoff_s``, doubled for every refusal in a
row up to 2 s, times a random 0.5 to 1.5 (jitter). Writes
``{"wall_s", "connect_s", "cpu_s", "rows": [[method, code, latency_s], ...]}`` to ``--out``
(``cpu_s``: this process's CPU seconds while sending, what the clients took from the server).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from gestalt_al.v1 import active_learning_pb2 as pb
from gestalt_al.v1.active_learning_pb2_grpc import ActiveLearningStub

BUDGET, PAGE, NEIGHBOURS, RESUBMIT = 10, 5, 5, 4
# The read mix, in operations (GetSelection's operation is two RPCs, its two pages).
MIX = {
    "GetRound": 0.30,
    "GetSelection": 0.25,
    "GetNeighbours": 0.25,
    "StreamSelection": 0.15,
    "SubmitLabels": 0.05,
}
RPCS = {"GetSelection": 2}  # RPCs per operation where not 1
BAD_ANSWER = "BAD_ANSWER"
MAX_BACKOFF_S = 2.0
Row = tuple[str, str, float]


@dataclass(frozen=True)
class LoadPlan:
    """What one leg sends, and to where; ``load.py`` writes it as JSON."""

    target: str  # host:port of Serve's gRPC proxy or the TLS gateway
    clients: int
    requests: int  # RPCs in all, over every client
    round_id: str
    pool_id: str
    strategies: list[str]  # the selections alternate between these
    sample_ids: list[str]  # GetNeighbours asks about these
    seed_labels: list[tuple[str, list[float]]]  # resubmitted unchanged
    deadline_s: float = 60.0
    refusal_backoff_s: float = 0.1
    seed: int = 0
    ca_file: str = ""  # set: TLS, trusting this CA
    application: str = "gestalt"
    desc: str = "requests"  # the progress bar's label

    @classmethod
    def load(cls, path: Path) -> LoadPlan:
        fields = json.loads(path.read_text())
        fields["seed_labels"] = [(s, list(v)) for s, v in fields["seed_labels"]]
        return cls(**fields)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self)))


class Schedule:
    """Operations drawn from ``MIX`` (seeded, shared by the clients of one event loop) until
    exactly ``requests`` RPCs are sent: an operation reserves its RPCs, and a GetSelection
    whose first page fails hands its second back."""

    def __init__(self, requests: int, seed: int) -> None:
        self.left = requests
        self.rng = random.Random(seed)

    def next(self) -> str | None:
        if self.left <= 0:
            return None
        op: str = self.rng.choices(list(MIX), list(MIX.values()))[0]
        if RPCS.get(op, 1) > self.left:
            op = "GetRound"
        self.left -= RPCS.get(op, 1)
        return op

    def give_back(self, rpcs: int) -> None:
        self.left += rpcs


class Client:
    """One client: its own channel and connection, its operations timed one RPC at a time."""

    def __init__(
        self, plan: LoadPlan, number: int, schedule: Schedule, rows: list[Row], bar: Any
    ) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        if plan.ca_file:
            credentials = grpc.ssl_channel_credentials(Path(plan.ca_file).read_bytes())
            self.channel = grpc.aio.secure_channel(plan.target, credentials, options)
        else:
            self.channel = grpc.aio.insecure_channel(plan.target, options)
        self.stub = ActiveLearningStub(self.channel)
        self.plan = plan
        self.schedule = schedule
        self.rng = random.Random(plan.seed * 100_003 + number)
        self.rows = rows
        self.bar = bar
        self.kw = {"metadata": (("application", plan.application),), "timeout": plan.deadline_s}

    async def run(self) -> None:
        """Take operations until the shared schedule is done."""
        handlers: dict[str, Callable[[], Awaitable[str]]] = {
            "GetRound": self.get_round,
            "GetSelection": self.get_selection,
            "GetNeighbours": self.get_neighbours,
            "StreamSelection": self.stream_selection,
            "SubmitLabels": self.submit_labels,
        }
        refusals = 0  # in a row
        while (op := self.schedule.next()) is not None:
            code = await handlers[op]()
            refusals = refusals + 1 if code == "RESOURCE_EXHAUSTED" else 0
            if refusals and self.plan.refusal_backoff_s > 0:
                delay = min(self.plan.refusal_backoff_s * 2 ** (refusals - 1), MAX_BACKOFF_S)
                await asyncio.sleep(delay * self.rng.uniform(0.5, 1.5))

    async def _timed(self, method: str, call: Callable[[], Awaitable[str]]) -> str:
        """Run one RPC (``call`` returns "OK" or BAD_ANSWER) and record it."""
        started = time.perf_counter()
        try:
            code = await call()
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        self.rows.append((method, code, time.perf_counter() - started))
        self.bar.update(1)
        return code

    async def get_round(self) -> str:
        async def call() -> str:
            found = await self.stub.GetRound(
                pb.GetRoundRequest(round_id=self.plan.round_id), **self.kw
            )
            return "OK" if found.state == pb.ROUND_STATE_DONE else BAD_ANSWER

        return await self._timed("GetRound", call)

    async def get_selection(self) -> str:
        strategy = self.rng.choice(self.plan.strategies)
        token = ""

        async def page() -> str:
            nonlocal token
            request = pb.GetSelectionRequest(
                round_id=self.plan.round_id, strategy=strategy, budget=BUDGET, page_size=PAGE,
                page_token=token,
            )  # fmt: skip
            found = await self.stub.GetSelection(request, **self.kw)
            token = found.next_page_token
            return "OK" if len(found.samples) == PAGE and found.total == BUDGET else BAD_ANSWER

        code = await self._timed("GetSelection", page)
        if code == "OK" and not token:  # the first page must hand out the second
            self.rows[-1] = ("GetSelection", BAD_ANSWER, self.rows[-1][2])
            code = BAD_ANSWER
        if code != "OK":
            self.schedule.give_back(1)  # the second page is not sent
            return code
        return await self._timed("GetSelection", page)

    async def get_neighbours(self) -> str:
        sample = self.rng.choice(self.plan.sample_ids)

        async def call() -> str:
            request = pb.GetNeighboursRequest(round_id=self.plan.round_id, sample_id=sample,
                                              k=NEIGHBOURS)  # fmt: skip
            found = await self.stub.GetNeighbours(request, **self.kw)
            return "OK" if len(found.neighbours) == NEIGHBOURS else BAD_ANSWER

        return await self._timed("GetNeighbours", call)

    async def stream_selection(self) -> str:
        strategy = self.rng.choice(self.plan.strategies)

        async def call() -> str:
            request = pb.GetSelectionRequest(
                round_id=self.plan.round_id, strategy=strategy, budget=BUDGET
            )
            count = 0
            async for _ in self.stub.StreamSelection(request, **self.kw):
                count += 1
            return "OK" if count == BUDGET else BAD_ANSWER

        return await self._timed("StreamSelection", call)

    async def submit_labels(self) -> str:
        chosen = self.rng.sample(self.plan.seed_labels, RESUBMIT)

        async def call() -> str:
            request = pb.SubmitLabelsRequest(
                pool_id=self.plan.pool_id,
                labels=[pb.SampleLabels(sample_id=s, labels=v) for s, v in chosen],
                submitter="load-benchmark",
            )
            found = await self.stub.SubmitLabels(request, **self.kw)
            return "OK" if (found.accepted, found.unchanged) == (0, RESUBMIT) else BAD_ANSWER

        return await self._timed("SubmitLabels", call)


async def run_leg(plan: LoadPlan) -> dict[str, Any]:
    """Connect every client, then send the schedule; the rows and the leg's wall seconds."""
    rows: list[Row] = []
    schedule = Schedule(plan.requests, plan.seed)
    tty = sys.stderr.isatty()
    with tqdm(total=plan.requests, desc=plan.desc, unit="rpc", leave=True,
              mininterval=0.5 if tty else 10, maxinterval=10) as bar:  # fmt: skip
        clients = [Client(plan, n, schedule, rows, bar) for n in range(plan.clients)]
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(c.channel.channel_ready() for c in clients)), plan.deadline_s
        )
        connect_s = time.perf_counter() - started
        before = _cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(c.run() for c in clients))
        wall_s = time.perf_counter() - started
        cpu_s = _cpu_seconds() - before
        await asyncio.gather(*(c.channel.close() for c in clients))
    if len(rows) != plan.requests:
        raise RuntimeError(f"sent {len(rows)} RPCs, the plan says {plan.requests}")
    return {"wall_s": wall_s, "connect_s": connect_s, "cpu_s": cpu_s, "rows": rows}


def _cpu_seconds() -> float:
    """This process's CPU seconds so far (all its threads: gRPC's own and the event loop)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True, help="a LoadPlan as JSON")
    parser.add_argument("--out", type=Path, required=True, help="where the results go (JSON)")
    args = parser.parse_args()
    result = asyncio.run(run_leg(LoadPlan.load(args.plan)))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
