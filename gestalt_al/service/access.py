"""Who may call which method: bearer tokens mapped to a principal and a role.

The tokens file holds only SHA-256 digests of the tokens (a Kubernetes Secret or a file of the
operator's), so reading it, or a log line quoting it, gives no one a usable token. It is read
again when it changes, so tokens are added or revoked without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gestalt_al.service.errors import PermissionDeniedError, UnauthenticatedError

logger = logging.getLogger(__name__)

READ_METHODS = frozenset(
    {"GetRound", "GetSelection", "StreamSelection", "GetNeighbours", "GetLoop"}
)
ROLES: Mapping[str, frozenset[str]] = {
    "reader": READ_METHODS,
    "labeler": READ_METHODS | {"SubmitLabels"},
    "operator": READ_METHODS | {"SubmitLabels", "RegisterPool", "StartRound", "StartLoop"},
}
_PRINCIPAL = re.compile(r"^[A-Za-z0-9._@:-]{1,128}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def may(self, method: str) -> bool:
        return method in ROLES[self.role]


ANONYMOUS = Principal("anonymous", "operator")  # every caller when access control is off


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_entry(principal: str, role: str) -> tuple[str, dict[str, str]]:
    """A fresh random token and the tokens-file entry that grants it ``role``."""
    entry = {"principal": principal, "role": role}
    _check_entry(entry | {"sha256": "0" * 64}, 0)
    token = secrets.token_urlsafe(32)
    return token, entry | {"sha256": token_digest(token)}


def grant(path: Path, principal: str, role: str) -> str:
    """Give ``principal`` a new token with ``role`` in the tokens file (created if missing);
    any earlier token of that principal stops working. Returns the token: the only time it
    is ever shown."""
    token, entry = new_token_entry(principal, role)
    _write_tokens(path, [*_other_entries(path, principal), entry])
    return token


def revoke(path: Path, principal: str) -> bool:
    """Remove every token of ``principal``; whether it had one."""
    kept = _other_entries(path, principal)
    found = len(kept) < len(_entries(path))
    _write_tokens(path, kept)
    return found


def _entries(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    _read_tokens(path)  # refuse to extend a broken file
    entries: list[dict[str, str]] = json.loads(path.read_text())["tokens"]
    return entries


def _other_entries(path: Path, principal: str) -> list[dict[str, str]]:
    return [e for e in _entries(path) if e["principal"] != principal]


def _write_tokens(path: Path, entries: list[dict[str, str]]) -> None:
    """Owner-only, and atomic: the service never reads a half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump({"tokens": entries}, file, indent=2)
    partial.replace(path)


class AccessPolicy:
    """``tokens_file`` empty: access control off (a laptop or a test; logged once as a
    warning). Otherwise every call needs ``authorization: Bearer <token>`` metadata."""

    def __init__(self, tokens_file: str = "") -> None:
        self.path = Path(tokens_file) if tokens_file else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, Principal] = {}
        if self.path is None:
            logger.warning("access control is OFF: no tokens file; every caller is an operator")
        else:
            self._reload(at_start=True)  # a bad file stops the service at start
            logger.info("access control on: %d token(s) from %s", len(self._by_digest), self.path)

    def authorize(self, metadata: Sequence[tuple[str, str | bytes]], method: str) -> Principal:
        if self.path is None:
            return ANONYMOUS
        principal = self._principal(metadata)
        if not principal.may(method):
            raise PermissionDeniedError(
                f"{principal.name!r} has role {principal.role!r}, which may not call {method}; "
                f"roles that may: {sorted(r for r, allowed in ROLES.items() if method in allowed)}"
            )
        return principal

    def _principal(self, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        values = [v for k, v in metadata if k.lower() == "authorization"]
        if not values:
            raise UnauthenticatedError(
                "missing credentials: send metadata 'authorization: Bearer <token>'"
            )
        scheme, _, token = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("malformed credentials: expected 'Bearer <token>'")
        digest = token_digest(token.strip())
        with self._lock:
            self._reload()
            # Compare every digest in constant time, so timing tells nothing about a match.
            found = [p for d, p in self._by_digest.items() if hmac.compare_digest(d, digest)]
        if not found:
            raise UnauthenticatedError("unknown or revoked token")
        return found[0]

    def _reload(self, at_start: bool = False) -> None:
        """Read the file again when it changed. A bad edit after start keeps the last good
        tokens (logged), so one typo does not lock every radiologist out."""
        assert self.path is not None
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._by_digest, self._stamp = _read_tokens(self.path), stamp
        except (OSError, ValueError) as exc:
            if at_start:
                raise ValueError(f"tokens file {self.path}: {exc}") from exc
            logger.error("tokens file unusable, keeping the last good tokens: %s", exc)


def _read_tokens(path: Path) -> dict[str, Principal]:
    """``{"tokens": [{"principal": ..., "role": ..., "sha256": ...}, ...]}``."""
    try:
        entries = json.loads(path.read_text())["tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"tokens file {path}: expected {{'tokens': [...]}} JSON ({exc})") from exc
    if not isinstance(entries, list):
        raise ValueError(f"tokens file {path}: 'tokens' must be a list")
    found: dict[str, Principal] = {}
    for number, entry in enumerate(entries):
        _check_entry(entry, number)
        found[entry["sha256"]] = Principal(entry["principal"], entry["role"])
    return found


def _check_entry(entry: object, number: int) -> None:
    if not isinstance(entry, dict) or set(entry) != {"principal", "role", "sha256"}:
        raise ValueError(f"token {number}: needs exactly 'principal', 'role' and 'sha256'")
    if not isinstance(entry["principal"], str) or not _PRINCIPAL.match(entry["principal"]):
        raise ValueError(f"token {number}: principal must match {_PRINCIPAL.pattern}")
    if entry["role"] not in ROLES:
        raise ValueError(f"token {number}: role must be one of {sorted(ROLES)}")
    if not isinstance(entry["sha256"], str) or not _DIGEST.match(entry["sha256"]):
        raise ValueError(f"token {number}: sha256 must be 64 lowercase hex digits")
