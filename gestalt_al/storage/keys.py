"""Object keys that cannot escape their namespace: relative, no '.' or '..' parts, no empty
parts, a conservative character set (ids from outside are checked before they become keys)."""

from __future__ import annotations

import re

_PART = re.compile(r"^[A-Za-z0-9._=+-]+$")
MAX_KEY_BYTES = 1024


def validate_key(key: str) -> str:
    """``key`` itself if it is safe, else ValueError saying what is wrong."""
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"object key must be 1 to {MAX_KEY_BYTES} bytes, got {len(key)}")
    for part in key.split("/"):
        if part in ("", ".", "..") or not _PART.match(part):
            raise ValueError(
                f"object key {key!r}: parts must be non-empty, not '.' or '..', and use only "
                "letters, digits and . _ = + -"
            )
    return key


def join_key(*parts: str) -> str:
    """Parts joined with '/', each validated (a part may itself hold '/')."""
    return validate_key("/".join(part.strip("/") for part in parts if part))
