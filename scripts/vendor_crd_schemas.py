"""Regenerates tests/k8s_schemas/podmonitor-monitoring-v1.json, the Prometheus Operator
PodMonitor schema the chart tests validate against (no cluster, no CRD download here).

The schema comes from cloudcoil's models, which are generated from the operator's CRDs; it
is made strict (an unknown field is an error, as the API server's structural schema makes
it) and optional fields lose their ``null`` alternative. Run it in a throwaway virtualenv:

    python3 -m venv /tmp/cc
    /tmp/cc/bin/pip install cloudcoil-models-prometheus-operator==0.80.1.0
    /tmp/cc/bin/python scripts/vendor_crd_schemas.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "tests" / "k8s_schemas"


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    fields = node.get("properties")  # field names, not schema keywords: keep every one
    node = {k: strict(v) for k, v in node.items() if k not in ("title", "default", "properties")}
    if isinstance(fields, dict):
        node["properties"] = {name: strict(v) for name, v in fields.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        node.pop("anyOf")
        node.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def main() -> None:
    from cloudcoil.models.prometheus_operator import v1  # type: ignore[import-not-found]

    schema = strict(v1.PodMonitor.model_json_schema(by_alias=True))
    schema["properties"]["apiVersion"] = {"const": "monitoring.coreos.com/v1"}
    schema["properties"]["kind"] = {"const": "PodMonitor"}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    path = OUT / "podmonitor-monitoring-v1.json"
    path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
