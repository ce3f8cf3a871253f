"""The Helm chart rendered offline (Helm v4 as a library) and every manifest checked against
its schema with no cluster: Kubernetes kinds against the schemas kubernetes-validate bundles,
KubeRay's RayService and Prometheus Operator's PodMonitor against tests/k8s_schemas/."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from helm_python import Chart
from referencing import Registry, Resource

from tests.conftest import REPO

CHART = REPO / "helm" / "gestalt-al"
SCHEMAS = REPO / "tests" / "k8s_schemas"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor the chart's README promises to support
CUSTOM_KINDS = {
    ("ray.io/v1", "RayService"): "rayservice-ray-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
}
Manifest = dict[str, Any]


def values_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text())
    return loaded


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """The manifests `helm install gestalt --namespace radiology` would apply, hooks included,
    after the chart's values.schema.json accepted ``values``."""
    chart = Chart.load(CHART)
    chart.validate_schema(values)
    rendered = chart.render(values, name="gestalt", namespace="radiology", is_install=True)
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


def check(manifest: Manifest) -> None:
    """Raise jsonschema.ValidationError (with the path of the bad field) unless the manifest
    is valid for its kind; a kind with no schema here is an error too."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key in CUSTOM_KINDS:
        validator = jsonschema.Draft202012Validator(
            _schema(CUSTOM_KINDS[key]), registry=_kubernetes_definitions()
        )
        validator.validate(manifest)
        return
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@cache
def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return loaded


@cache
def _kubernetes_definitions() -> Registry:
    """kubernetes-validate's strict definitions, under the URI its schemas refer to."""
    version = ".".join(KUBERNETES_VERSION.split(".")[:2])
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    matches = sorted(folder.glob(f"v{version}.*-local-strict"))
    definitions = json.loads((matches[-1] / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()
