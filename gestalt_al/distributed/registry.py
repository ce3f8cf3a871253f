"""Versioned, immutable model files in the checkpoint storage (a folder or an S3 bucket).

A model id says what it is, for which round, and which bytes: ``task-r0003-1a2b3c4d5e6f``
(the last part is the start of the file's SHA-256, checked on every fetch). Round r's
deployments load round r's id, and a round's model never changes once published.
"""

from __future__ import annotations

import hashlib
import re

import torch

from gestalt_al.safe_io import Config, state_bytes, state_from_bytes
from gestalt_al.storage import ObjectNotFoundError, open_store

_KIND = re.compile(r"^[a-z][a-z_]{0,31}$")
_MODEL_ID = re.compile(r"^([a-z][a-z_]{0,31})-r(\d{4,})-([0-9a-f]{12})$")


def _checked_id(model_id: str) -> re.Match[str]:
    match = _MODEL_ID.match(model_id)
    if match is None:
        raise ValueError(f"{model_id!r} is not a model id (like 'task-r0003-1a2b3c4d5e6f')")
    return match


class ModelRegistry:
    """Models under ``<storage>/models/<id>.pt`` in the ``safe_io`` format (no pickle), in the
    object store (whose writes replace an object whole, so a reader never sees half a model)."""

    def __init__(self, storage: str) -> None:
        self.store = open_store(storage)

    def publish(
        self, kind: str, round_number: int, config: Config, state: dict[str, torch.Tensor]
    ) -> str:
        """Store a round's model and return its id. Publishing the same bytes again returns
        the same id; a different model for a round that has one is refused."""
        if not _KIND.match(kind) or round_number < 0:
            raise ValueError(
                f"need a lowercase kind and a round >= 0, got {kind!r}, {round_number}"
            )
        data = state_bytes(config, state)
        model_id = f"{kind}-r{round_number:04d}-{hashlib.sha256(data).hexdigest()[:12]}"
        existing = self.ids(kind, round_number)
        if existing == [model_id]:
            return model_id
        if existing:
            raise FileExistsError(
                f"round {round_number} already has the {kind} model {existing[0]}; a round's "
                "model never changes, so train the new one for the next round"
            )
        self.store.put(self._key(model_id), data)
        return model_id

    def fetch(self, model_id: str) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
        """The config and tensors of a published model, after checking its digest."""
        digest = _checked_id(model_id).group(3)
        try:
            data = self.store.get(self._key(model_id))
        except ObjectNotFoundError as exc:
            raise LookupError(f"no model {model_id!r} in {self.store.description}") from exc
        if hashlib.sha256(data).hexdigest()[:12] != digest:
            raise ValueError(f"{model_id}: stored bytes do not match the id (corrupt or altered)")
        return state_from_bytes(data, model_id)

    def exists(self, model_id: str) -> bool:
        _checked_id(model_id)
        return self.store.exists(self._key(model_id))

    def ids(self, kind: str, round_number: int | None = None) -> list[str]:
        """Published ids of ``kind`` (of one round if given), oldest round first."""
        found = []
        for key in self.store.list("models"):
            name = key.removeprefix("models/")
            match = _MODEL_ID.match(name.removesuffix(".pt"))
            if match is None or not name.endswith(".pt") or match.group(1) != kind:
                continue
            if round_number is None or int(match.group(2)) == round_number:
                found.append(match.group(0))
        return sorted(found, key=lambda model_id: int(_checked_id(model_id).group(2)))

    def for_round(self, kind: str, round_number: int) -> str:
        ids = self.ids(kind, round_number)
        if not ids:
            raise LookupError(f"no {kind} model was published for round {round_number}")
        return ids[0]

    @staticmethod
    def _key(model_id: str) -> str:
        return f"models/{model_id}.pt"
