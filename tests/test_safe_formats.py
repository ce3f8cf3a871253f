"""Models, checkpoints and arrays load only through formats that cannot run code: a pickle
that would run a command is refused before it runs, and no loader in the code base can
unpickle (checked on the source, so a new loader cannot slip in)."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from gestalt_al.safe_io import state_from_bytes
from gestalt_al.service.arrays import load_npy
from tests.conftest import REPO

PACKAGES = ("gestalt_al", "services", "actors", "benchmarks", "scripts")
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}


class _RunsCode:
    """Unpickling this runs ``touch <path>``: what a poisoned model file would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.path}",)


def test_a_poisoned_model_file_is_refused_without_running_it(tmp_path: Path) -> None:
    proof = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"config": {}, "state_dict": _RunsCode(proof)}, buffer)
    with pytest.raises(ValueError, match="not a gestalt-al model file"):
        state_from_bytes(buffer.getvalue(), "models/task-r0000-0123456789ab.pt")
    assert not proof.exists()


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    proof = tmp_path / "ran"
    buffer = io.BytesIO()
    np.save(buffer, np.array([_RunsCode(proof)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        load_npy(buffer.getvalue())
    assert not proof.exists()


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name):
                found.append((f"{owner.id}.{node.func.attr}", node))
    return found


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def test_every_loader_in_the_code_base_refuses_pickle() -> None:
    problems, loaders = [], 0
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            where = path.relative_to(REPO)
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                problems += [f"{where}: imports {n}" for n in names if n in UNSAFE_MODULES]
            for name, call in _calls(tree):
                if name == "torch.load":
                    loaders += 1
                    if _keyword(call, "weights_only") is not True:
                        problems.append(f"{where}:{call.lineno}: torch.load without weights_only")
                elif name == "np.load":
                    loaders += 1
                    if _keyword(call, "allow_pickle") is not False:
                        problems.append(f"{where}:{call.lineno}: np.load without allow_pickle")
                elif name == "yaml.load" or name == "yaml.unsafe_load":
                    problems.append(f"{where}:{call.lineno}: {name} (use yaml.safe_load)")
    assert loaders >= 5, "the scan found the loaders it is meant to check"
    assert problems == []
