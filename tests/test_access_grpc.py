"""Access control, the label rule and the audit trail on the production path: client -> TLS
gateway (its own process, mTLS) -> Serve's gRPC proxy -> ingress with access control on, with
tokens for an operator, a radiologist (labeler) and an auditor (reader)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import ray
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gestalt_al.client import ClientTLS, ServiceClient
from gestalt_al.service.audit import AuditLog
from gestalt_al.storage.store import LocalStore
from gestalt_al.v1 import active_learning_pb2 as pb
from tests.certs import make_pki
from tests.conftest import RayCluster
from tests.servers import tls_gateway
from tests.service_env import LABELED, ServiceEnv, start_service
from tests.test_access import write_tokens

UNAUTHENTICATED, DENIED = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class Secured:
    env: ServiceEnv
    tokens_file: Path
    tokens: dict[str, str]
    clients: dict[str, ServiceClient]  # by principal
    round_id: str
    target: str  # the gateway
    tls: ClientTLS  # the hospital's CA and a client certificate it issued

    def client(self, token: str = "") -> ServiceClient:
        return ServiceClient(self.target, token=token, tls=self.tls)


@pytest.fixture(scope="module")
def secured(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    from services.app import shutdown

    root = tmp_path_factory.mktemp("secured")
    tokens_file = root / "tokens.json"
    grants = ("ops", "operator"), ("dr-lee", "labeler"), ("auditor", "reader")
    tokens = write_tokens(tokens_file, *grants)
    env = start_service(root, str(tokens_file))
    pki = make_pki(root / "pki")
    tls = ClientTLS(pki.ca, pki.client_cert, pki.client_key)
    stack = contextlib.ExitStack()
    target = stack.enter_context(tls_gateway(pki, env.grpc_target, "--client-ca", str(pki.ca)))
    clients = {name: ServiceClient(target, token=token, tls=tls) for name, token in tokens.items()}
    ops = clients["ops"]
    ops.register_pool("nih", env.pool_uri)
    seed = [(str(env.ids[i]), env.labels[i].astype(float).tolist()) for i in range(LABELED)]
    ops.submit_labels("nih", seed, submitter="seed import")  # round-less: operators only
    started = ops.start_round("nih", env.model_id)
    finished = ops.wait_round(started.round_id, timeout=600, progress=False)
    assert finished.state == pb.ROUND_STATE_DONE, finished.message
    yield Secured(env, tokens_file, tokens, clients, finished.round_id, target, tls)
    for client in clients.values():
        client.close()
    stack.close()
    env.client.close()
    shutdown()


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert isinstance(caught.value, grpc.Call)
    code: grpc.StatusCode = caught.value.code()
    return code, caught.value.details() or ""


def _outcome(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def _every_method(client: ServiceClient, round_id: str) -> dict[str, Callable[[], object]]:
    """One call per API method; with a good token each would get past access control."""
    return {
        "RegisterPool": lambda: client.register_pool("other", "/nowhere"),
        "StartRound": lambda: client.start_round("nih", "gestalt-r0000-0123456789ab"),
        "GetRound": lambda: client.get_round(round_id),
        "GetSelection": lambda: client.selection(round_id, "random", 3),
        "StreamSelection": lambda: list(client.stream_selection(round_id, "random", 3)),
        "SubmitLabels": lambda: client.submit_labels("nih", [("x", [0.0] * 14)], round_id),
        "GetNeighbours": lambda: client.neighbours(round_id, "x", 3),
        "StartLoop": lambda: client.start_loop("nih", "/nowhere.npz"),
        "GetLoop": lambda: client.get_loop("nih-loop"),
    }


def test_every_method_but_health_needs_a_known_token(secured: Secured) -> None:
    anonymous = secured.client()
    forged = secured.client(token="not-a-token-anyone-was-given")
    basic = secured.client()
    basic.metadata = (*basic.metadata, ("authorization", "Basic b3BzOnB3"))
    for client, reason in ((anonymous, "missing"), (forged, "unknown"), (basic, "malformed")):
        for method, call in _every_method(client, secured.round_id).items():
            code, details = _code(call)
            assert (code, reason in details) == (UNAUTHENTICATED, True), (method, details)
        client.close()
    # Health needs no token: a load balancer's probe has none.
    with secured.tls.channel(secured.target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_roles_limit_what_a_known_caller_may_do(secured: Secured) -> None:
    reader, labeler = secured.clients["auditor"], secured.clients["dr-lee"]
    assert reader.get_round(secured.round_id).state == pb.ROUND_STATE_DONE
    denied = {
        "auditor": ["RegisterPool", "StartRound", "SubmitLabels", "StartLoop"],
        "dr-lee": ["RegisterPool", "StartRound", "StartLoop"],
    }
    for name, methods in denied.items():
        calls = _every_method(secured.clients[name], secured.round_id)
        for method in methods:
            code, details = _code(calls[method])
            assert code == DENIED, (name, method, details)
            assert f"may not call {method}" in details
    # The operator gets past access control everywhere (to the request's own errors).
    for method, call in _every_method(secured.clients["ops"], secured.round_id).items():
        assert _outcome(call) not in (UNAUTHENTICATED, DENIED), method
    # A labeler may not submit labels outside a round (that is an operator's import).
    sample = str(secured.env.ids[LABELED + 1])
    code, details = _code(lambda: labeler.submit_labels("nih", [(sample, [0.0] * 14)]))
    assert code == DENIED
    assert "must name the round" in details


def test_labels_only_for_samples_their_round_queried_and_every_step_is_audited(
    secured: Secured,
) -> None:
    env, labeler, round_id = secured.env, secured.clients["dr-lee"], secured.round_id
    truth = {str(env.ids[i]): env.labels[i].astype(float).tolist() for i in range(len(env.ids))}
    asked = [s.sample_id for s in labeler.selection(round_id, "gestalt_node", 5, page_size=2)]
    not_asked = next(s for s in truth if s not in asked and s not in map(str, env.ids[:LABELED]))
    before = labeler.get_round(round_id)  # noqa: F841 - a read is not audited as a query
    code, details = _code(
        lambda: labeler.submit_labels("nih", [(asked[0], truth[asked[0]]),
                                             (not_asked, truth[not_asked])], round_id)
    )  # fmt: skip
    assert code == PRECONDITION, details
    assert not_asked in details
    response = labeler.submit_labels("nih", [(s, truth[s]) for s in asked], round_id, "dr lee")
    assert (response.accepted, response.unchanged) == (5, 0), "the refused request stored none"
    again = labeler.submit_labels("nih", [(s, truth[s]) for s in asked[:2]], round_id)
    assert (again.accepted, again.unchanged) == (0, 2)
    events = [
        e for e in AuditLog(LocalStore(env.storage)).events(round_id) if e["principal"] == "dr-lee"
    ]  # the operator's calls above are there too
    trail = [(e["kind"], e["principal"], e["outcome"], e["sample_ids"]) for e in events]
    assert (
        trail
        == [
            ("selection", "dr-lee", "OK", asked[0:2]),  # one event per page handed out
            ("selection", "dr-lee", "OK", asked[2:4]),
            ("selection", "dr-lee", "OK", asked[4:5]),
            ("labels", "dr-lee", "FAILED_PRECONDITION", [asked[0], not_asked]),
            ("labels", "dr-lee", "OK", asked),
            ("labels", "dr-lee", "OK", asked[:2]),
        ]
    )
    assert events[-2]["details"] == {"submitter": "dr lee", "accepted": 5, "unchanged": 0}
    seed = AuditLog(LocalStore(env.storage)).events("")
    assert [(e["principal"], e["outcome"], e["details"]) for e in seed] == [
        ("ops", "OK", {"submitter": "seed import", "accepted": LABELED, "unchanged": 0}),
        ("dr-lee", "PERMISSION_DENIED", {"submitter": "", "round_id": ""}),  # refused: no round
    ]


def test_revoked_tokens_stop_working_at_once_and_no_token_reaches_a_log(secured: Secured) -> None:
    auditor = secured.clients["auditor"]
    assert auditor.get_round(secured.round_id).round_id == secured.round_id
    kept = {"ops": "operator", "dr-lee": "labeler"}
    entries = json.loads(secured.tokens_file.read_text())["tokens"]
    secured.tokens_file.write_text(
        json.dumps({"tokens": [e for e in entries if e["principal"] in kept]})
    )
    os.utime(secured.tokens_file, ns=(1, 1))
    code, details = _code(lambda: auditor.get_round(secured.round_id))
    assert (code, "revoked" in details) == (UNAUTHENTICATED, True)
    assert secured.clients["ops"].get_round(secured.round_id).round_id == secured.round_id
    # Ray's logs of every process of this session: refusals are logged, tokens never.
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # type: ignore[attr-defined]
    text = "\n".join(path.read_text(errors="replace") for path in logs.rglob("*") if path.is_file())
    assert "refused GetRound" in text, "the refusals above were logged (the scan sees them)"
    for token in secured.tokens.values():
        assert token not in text
