"""Errors a client can act on, one class per gRPC status code the API returns.

The core raises these; the gRPC ingress maps each to its code and passes the message on.
``StoreUnavailableError`` from the object store maps to UNAVAILABLE in the same place.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base: the message is meant for the person who made the request."""


class InvalidArgumentError(ServiceError, ValueError):
    pass


class NotFoundError(ServiceError, LookupError):
    pass


class FailedPreconditionError(ServiceError):
    pass


class AlreadyExistsError(ServiceError):
    pass


class UnauthenticatedError(ServiceError):
    """No credentials, or credentials the service does not know."""


class PermissionDeniedError(ServiceError):
    """Known caller, but its role does not allow the method."""


def root_cause(exc: BaseException) -> BaseException:
    """The error inside Ray's wrappers (a failed task or actor call keeps it as ``cause``),
    so that its type picks the status code and its message reaches the client unwrapped."""
    seen = exc
    while True:
        inner = getattr(seen, "cause", None)  # Ray's task errors; our own chains stay whole
        if not isinstance(inner, BaseException) or inner is seen:
            return seen
        seen = inner


# gRPC sends a status message as trailing metadata, percent-encoding every byte outside
# printable ASCII: a client refuses trailers over 8 KiB (RESOURCE_EXHAUSTED, not our code).
MAX_MESSAGE_BYTES = 2000


def clip_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` if its percent-encoded size fits ``limit``, else its start and end around
    ' … ' (a long or non-ASCII value quoted from a request must not lose the status code)."""

    def costs(text: str) -> list[int]:
        return [sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in c.encode()) for c in text]

    if len(message) <= limit and sum(costs(message)) <= limit:
        return message
    budget = limit - 11  # ' … ' encoded
    front, back = costs(message[:budget]), costs(message[-budget:])  # a character costs >= 1
    head = spent = 0
    while spent + front[head] <= budget * 2 // 3:
        spent += front[head]
        head += 1
    tail = 0
    while spent + back[-1 - tail] <= budget and head + tail < len(message):
        spent += back[-1 - tail]
        tail += 1
    return f"{message[:head]} … {message[len(message) - tail :]}"
