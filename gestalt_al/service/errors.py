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


def root_cause(exc: BaseException) -> BaseException:
    """The error inside Ray's wrappers (a failed task or actor call keeps it as ``cause``),
    so that its type picks the status code and its message reaches the client unwrapped."""
    seen = exc
    while True:
        inner = getattr(seen, "cause", None)  # Ray's task errors; our own chains stay whole
        if not isinstance(inner, BaseException) or inner is seen:
            return seen
        seen = inner
