"""Access policy and audit log without Ray: tokens, roles, rotation, and the queried-samples
record the label rule reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gestalt_al.service.access import (
    ANONYMOUS,
    ROLES,
    AccessPolicy,
    Principal,
    new_token_entry,
    token_digest,
)
from gestalt_al.service.audit import AuditEvent, AuditLog
from gestalt_al.service.errors import PermissionDeniedError, UnauthenticatedError
from gestalt_al.storage.store import LocalStore

METHODS = sorted(ROLES["operator"])


def write_tokens(path: Path, *grants: tuple[str, str]) -> dict[str, str]:
    """A tokens file granting each (principal, role); returns principal -> token."""
    tokens, entries = {}, []
    for principal, role in grants:
        token, entry = new_token_entry(principal, role)
        tokens[principal] = token
        entries.append(entry)
    path.write_text(json.dumps({"tokens": entries}))
    return tokens


def bearer(token: str) -> list[tuple[str, str]]:
    return [("application", "gestalt"), ("authorization", f"Bearer {token}")]


def test_tokens_map_to_principals_and_roles_limit_methods(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    tokens = write_tokens(path, ("ops", "operator"), ("dr-lee", "labeler"), ("audit", "reader"))
    assert tokens["ops"] not in path.read_text(), "the file holds digests, never tokens"
    policy = AccessPolicy(str(path))
    allowed = {
        "ops": set(METHODS),
        "dr-lee": {"GetRound", "GetSelection", "StreamSelection", "GetNeighbours", "GetLoop",
                   "SubmitLabels"},
        "audit": {"GetRound", "GetSelection", "StreamSelection", "GetNeighbours", "GetLoop"},
    }  # fmt: skip
    for name, token in tokens.items():
        for method in METHODS:
            if method in allowed[name]:
                assert policy.authorize(bearer(token), method).name == name
            else:
                with pytest.raises(PermissionDeniedError, match=method):
                    policy.authorize(bearer(token), method)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([("application", "gestalt")], "missing credentials"),
        ([("authorization", "Basic b3BzOnB3")], "malformed"),
        ([("authorization", "Bearer ")], "malformed"),
        ([("authorization", "Bearer not-a-known-token")], "unknown or revoked"),
    ],
)
def test_missing_malformed_or_unknown_tokens_are_unauthenticated(
    tmp_path: Path, metadata: list[tuple[str, str]], reason: str
) -> None:
    path = tmp_path / "tokens.json"
    write_tokens(path, ("ops", "operator"))
    with pytest.raises(UnauthenticatedError, match=reason):
        AccessPolicy(str(path)).authorize(metadata, "GetRound")


def test_tokens_are_added_and_revoked_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    first = write_tokens(path, ("ops", "operator"))
    policy = AccessPolicy(str(path))
    assert policy.authorize(bearer(first["ops"]), "StartRound").name == "ops"
    second = write_tokens(path, ("dr-lee", "labeler"))
    os.utime(path, ns=(1, 1))  # a new stamp even within the file system's time resolution
    with pytest.raises(UnauthenticatedError, match="revoked"):
        policy.authorize(bearer(first["ops"]), "GetRound")
    assert policy.authorize(bearer(second["dr-lee"]), "SubmitLabels").name == "dr-lee"
    # A broken edit keeps the last good tokens instead of locking everyone out.
    path.write_text("{not json")
    assert policy.authorize(bearer(second["dr-lee"]), "GetRound").name == "dr-lee"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[]", "expected"),
        ('{"tokens": {}}', "must be a list"),
        ('{"tokens": [{"principal": "a", "role": "admin", "sha256": "' + "0" * 64 + '"}]}', "role"),
        ('{"tokens": [{"principal": "a", "role": "reader", "sha256": "abc"}]}', "sha256"),
        ('{"tokens": [{"principal": "a b", "role": "reader", "sha256": "' + "0" * 64 + '"}]}',
         "principal"),
        ('{"tokens": [{"principal": "a", "role": "reader", "token": "plain"}]}', "exactly"),
    ],
)  # fmt: skip
def test_a_bad_tokens_file_stops_the_service_at_start(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem):
        AccessPolicy(str(path))
    with pytest.raises(ValueError, match="tokens file"):
        AccessPolicy(str(tmp_path / "missing.json"))


def test_without_a_tokens_file_everyone_is_the_anonymous_operator() -> None:
    assert AccessPolicy("").authorize([], "StartRound") == ANONYMOUS
    assert token_digest("x") == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


def test_the_audit_log_records_events_and_the_queried_ids_of_a_round(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    log, other_reader = AuditLog(store), AuditLog(store)
    round_id = "nih.0123456789ab"
    assert log.queried(round_id) == set()
    log.record(AuditEvent("selection", "dr-lee", "labeler", "nih", round_id, ["a", "b"]))
    log.record(AuditEvent("labels", "dr-lee", "labeler", "nih", round_id, ["c"], "OK"))
    log.record(AuditEvent("labels", "ops", "operator", "nih", "", ["x"], "OK"))
    # Another process (the loop coordinator) records a selection; readers pick it up.
    other_reader.record(AuditEvent("selection", "loop:l", "operator", "nih", round_id, ["d"]))
    assert log.queried(round_id) == {"a", "b", "d"}, "labels never count as queried"
    events = log.events(round_id)
    assert [(e["kind"], e["principal"], e["sample_ids"]) for e in events] == [
        ("selection", "dr-lee", ["a", "b"]),
        ("labels", "dr-lee", ["c"]),
        ("selection", "loop:l", ["d"]),
    ]
    assert all(str(e["time"]).endswith("+00:00") for e in events)
    assert [e["principal"] for e in log.events("")] == ["ops"]
    with pytest.raises(ValueError, match="object key"):
        log.record(AuditEvent("labels", "x", "operator", "nih", "../../etc", ["a"]))


def test_the_token_command_grants_rotates_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gestalt_al.cli import main

    path = tmp_path / "tokens.json"
    command = ["token", "--tokens-file", str(path), "--principal", "dr-lee"]
    assert main(command) == 0
    first = capsys.readouterr().out.strip()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert first not in path.read_text()
    policy = AccessPolicy(str(path))
    assert policy.authorize(bearer(first), "SubmitLabels") == Principal("dr-lee", "labeler")
    assert main([*command, "--role", "reader"]) == 0  # a new token replaces the old one
    second = capsys.readouterr().out.strip()
    with pytest.raises(UnauthenticatedError):
        policy.authorize(bearer(first), "GetRound")
    with pytest.raises(PermissionDeniedError):
        policy.authorize(bearer(second), "SubmitLabels")
    assert main([*command, "--revoke"]) == 0
    assert main([*command, "--revoke"]) == 1  # nothing left to revoke
    with pytest.raises(UnauthenticatedError):
        policy.authorize(bearer(second), "GetRound")
    bad_name = ["token", "--tokens-file", str(path), "--principal", "a b"]
    assert main(bad_name) == 2, "a principal the audit trail could not name is refused"
