"""A Python client for the ``gestalt_al.v1`` gRPC API (what the demo and the tests use).

Calls go through Ray Serve's gRPC proxy, which routes by the ``application`` metadata, either
directly (plaintext, inside the cluster) or through the TLS gateway (``services.gateway``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from gestalt_al.v1 import active_learning_pb2 as pb
from gestalt_al.v1.active_learning_pb2_grpc import ActiveLearningStub


@dataclass(frozen=True)
class ClientTLS:
    """PEM files: the CA that signed the gateway's certificate and, for mTLS, this client's
    certificate and key."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str = ""  # the name the certificate is for, when the target is an address

    def channel(self, target: str) -> grpc.Channel:
        client_pair = (
            (self.key_file.read_bytes(), self.cert_file.read_bytes())
            if self.cert_file and self.key_file
            else (None, None)
        )
        credentials = grpc.ssl_channel_credentials(self.ca_file.read_bytes(), *client_pair)
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.secure_channel(target, credentials, options)


class ServiceClient:
    def __init__(
        self,
        target: str,
        application: str = "gestalt",
        timeout: float = 60,
        token: str = "",
        tls: ClientTLS | None = None,
    ) -> None:
        """``token``: a bearer token the service knows (sent as ``authorization`` metadata)."""
        self.channel = tls.channel(target) if tls else grpc.insecure_channel(target)
        self.stub = ActiveLearningStub(self.channel)
        bearer = (("authorization", f"Bearer {token}"),) if token else ()
        self.metadata: tuple[tuple[str, str], ...] = (("application", application), *bearer)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def register_pool(self, pool_id: str, uri: str) -> pb.Pool:
        request = pb.RegisterPoolRequest(pool_id=pool_id, uri=uri)
        response: pb.Pool = self.stub.RegisterPool(
            request, metadata=self.metadata, timeout=self.timeout
        )
        return response

    def submit_labels(
        self,
        pool_id: str,
        labels: Sequence[tuple[str, Sequence[float]]],
        round_id: str = "",
        submitter: str = "",
    ) -> pb.SubmitLabelsResponse:
        request = pb.SubmitLabelsRequest(
            pool_id=pool_id,
            labels=[pb.SampleLabels(sample_id=s, labels=list(v)) for s, v in labels],
            round_id=round_id,
            submitter=submitter,
        )
        response: pb.SubmitLabelsResponse = self.stub.SubmitLabels(
            request, metadata=self.metadata, timeout=self.timeout
        )
        return response

    def start_round(self, pool_id: str, model_id: str, sampler_model_id: str = "") -> pb.Round:
        request = pb.StartRoundRequest(
            pool_id=pool_id, model_id=model_id, sampler_model_id=sampler_model_id
        )
        response: pb.Round = self.stub.StartRound(
            request, metadata=self.metadata, timeout=self.timeout
        )
        return response

    def get_round(self, round_id: str) -> pb.Round:
        request = pb.GetRoundRequest(round_id=round_id)
        response: pb.Round = self.stub.GetRound(
            request, metadata=self.metadata, timeout=self.timeout
        )
        return response

    def wait_round(self, round_id: str, timeout: float = 900, progress: bool = True) -> pb.Round:
        """Poll until the round is DONE or FAILED, with a progress bar over its shards."""
        deadline = time.monotonic() + timeout
        with tqdm(desc=f"round {round_id}", unit="shard", disable=not progress) as bar:
            while True:
                state = self.get_round(round_id)
                bar.total = state.shards_total
                bar.n = state.shards_done
                bar.set_postfix(state=pb.RoundState.Name(state.state))
                bar.refresh()
                if state.state in (pb.ROUND_STATE_DONE, pb.ROUND_STATE_FAILED):
                    return state
                if time.monotonic() > deadline:
                    raise TimeoutError(f"round {round_id} not finished after {timeout} s")
                time.sleep(0.5)

    def selection(
        self, round_id: str, strategy: str, budget: int, page_size: int = 0
    ) -> list[pb.SelectedSample]:
        """All pages of a selection."""
        samples: list[pb.SelectedSample] = []
        token = ""
        while True:
            page: pb.SelectionPage = self.stub.GetSelection(
                pb.GetSelectionRequest(
                    round_id=round_id, strategy=strategy, budget=budget,
                    page_size=page_size, page_token=token,
                ),
                metadata=self.metadata,
                timeout=self.timeout,
            )  # fmt: skip
            samples.extend(page.samples)
            token = page.next_page_token
            if not token:
                return samples

    def stream_selection(
        self, round_id: str, strategy: str, budget: int
    ) -> Iterator[pb.SelectedSample]:
        request = pb.GetSelectionRequest(round_id=round_id, strategy=strategy, budget=budget)
        stream: Iterator[pb.SelectedSample] = self.stub.StreamSelection(
            request, metadata=self.metadata, timeout=self.timeout
        )
        yield from stream

    def neighbours(self, round_id: str, sample_id: str, k: int) -> list[pb.Neighbour]:
        request = pb.GetNeighboursRequest(round_id=round_id, sample_id=sample_id, k=k)
        response: pb.Neighbours = self.stub.GetNeighbours(
            request, metadata=self.metadata, timeout=self.timeout
        )
        return list(response.neighbours)

    def start_loop(
        self, pool_id: str, data: str, model: dict[str, Any] | None = None, **config: Any
    ) -> pb.Loop:
        """Start (or find, or resume) a loop; ``config`` takes ``LoopConfig`` fields and
        ``model`` the ``ModelSettings`` ones (see the proto for both and their defaults)."""
        request = pb.LoopConfig(
            pool_id=pool_id, data=data, model=pb.ModelSettings(**(model or {})), **config
        )
        response: pb.Loop = self.stub.StartLoop(
            request, metadata=self.metadata, timeout=self.timeout
        )
        return response

    def get_loop(self, loop_id: str) -> pb.Loop:
        request = pb.GetLoopRequest(loop_id=loop_id)
        response: pb.Loop = self.stub.GetLoop(request, metadata=self.metadata, timeout=self.timeout)
        return response

    def wait_loop(self, loop_id: str, timeout: float = 86_400, progress: bool = True) -> pb.Loop:
        """Poll until the loop is FINISHED or FAILED, with a progress bar over its rounds."""
        deadline = time.monotonic() + timeout
        ended = (pb.LOOP_STATE_FINISHED, pb.LOOP_STATE_FAILED)
        with tqdm(desc=f"loop {loop_id}", unit="round", disable=not progress) as bar:
            while True:
                loop = self.get_loop(loop_id)
                bar.n = sum(r.stage == pb.LOOP_STAGE_DONE for r in loop.rounds)
                bar.set_postfix(round=loop.round, stage=pb.LoopStage.Name(loop.stage),
                                labeled=loop.num_labeled)  # fmt: skip
                bar.refresh()
                if loop.state in ended:
                    return loop
                if time.monotonic() > deadline:
                    raise TimeoutError(f"loop {loop_id} not finished after {timeout} s")
                time.sleep(1)
