"""How the service's long-lived actors are created: named, detached, restarted forever.

Their state lives in the object store, so a restarted actor only resumes work; every process
that needs one finds the same actor by name (the first caller creates it).
"""

from __future__ import annotations

from typing import TypeVar

import ray

T = TypeVar("T")


def detached_actor(
    cls: type[T], name: str, namespace: str, *args: object
) -> ray.actor.ActorHandle[T]:
    remote = ray.remote(cls).options(
        name=name,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        max_concurrency=8,
        num_cpus=0,  # they coordinate; the work runs in Serve replicas and Ray tasks
    )
    return remote.remote(*args)  # type: ignore[return-value]
