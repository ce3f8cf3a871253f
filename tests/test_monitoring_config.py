"""The alert rules and the Grafana dashboard against promtool and against the metrics the code
declares (fast, no Ray): a renamed metric or a broken expression fails here, not on a pager."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "gestalt-al.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's variables, replaced by something of the same PromQL kind for promtool.
VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$loop": ".*",
    "$application": "gestalt",
}
SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_count", "_sum")}
METRIC_NAME = re.compile(r"\bray_gestalt_[A-Za-z0-9_]+")


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "install Debian's 'prometheus' package (scripts/bootstrap.sh does as root)"
    return binary


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def declared_metrics(source: Path = REPO / "services" / "metrics.py") -> dict[str, list[str]]:
    """Each metric ``services/metrics.py`` declares, by the names Ray's agent exports it under
    (``ray_`` prefix; counters ``_total``, histograms ``_bucket``/``_count``/``_sum``). Read
    from the source: creating the metrics would import Ray."""
    declared: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source.read_text())):
        if not isinstance(node, ast.Call):
            continue
        kind = ast.unparse(node.func)
        if kind in ("metrics.Counter", "metrics.Histogram", "metrics.Gauge", "HeldGauge"):
            # A plain Ray gauge vanishes from the export ~20 s after it was set.
            assert kind != "metrics.Gauge", f"declare gauges as HeldGauge: {ast.unparse(node)}"
            name = node.args[0]
            assert isinstance(name, ast.Constant), ast.unparse(node)
            assert isinstance(name.value, str), ast.unparse(node)
            suffixes = SUFFIXES[kind.removeprefix("metrics.").removeprefix("Held")]
            declared[name.value] = [f"ray_{name.value}{suffix}" for suffix in suffixes]
    return declared


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every panel query's PromQL, by ``<panel title> <refId>``, Grafana variables replaced."""
    found = {}
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expression = target["expr"]
            for variable, value in VARIABLES.items():
                expression = expression.replace(variable, value)
            assert "$" not in expression, f"unknown variable in {target['expr']!r}"
            found[f"{panel['title']} {target['refId']}"] = expression
    return found


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_prometheus_checks_the_config_and_the_alert_rules(promtool: str) -> None:
    assert "SUCCESS: 1 rule files found" in _run(promtool, "check", "config", "prometheus.yml")
    assert f"SUCCESS: {len(_alert_rules())} rules found" in _run(
        promtool, "check", "rules", ALERTS.name
    )


def test_the_alerts_pass_their_unit_tests(promtool: str) -> None:
    _run(promtool, "test", "rules", ALERT_TESTS.name)


def test_every_alert_is_tested_firing_and_quiet_and_says_what_to_do() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    for rule in _alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert set(rule["annotations"]) == {"summary", "description"}, name
        assert all(rule["annotations"].values()), name
        own = [case["exp_alerts"] for case in cases if case["alertname"] == name]
        assert any(own), f"no test makes {name} fire"
        assert not all(own), f"no test keeps {name} quiet"
        for expected in (alert for alerts in own for alert in alerts):
            assert expected["exp_labels"]["severity"] == rule["labels"]["severity"], name
            assert set(expected["exp_annotations"]) == set(rule["annotations"]), name


def test_every_dashboard_expression_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    expressions = dashboard_expressions(_dashboard())
    assert len(expressions) >= 20
    # promtool has no PromQL-only check: the expressions become recording rules it parses.
    records = [
        {"record": f"dashboard_query_{i}", "expr": e} for i, e in enumerate(expressions.values())
    ]
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    names = "\n".join(f"dashboard_query_{i}: {key}" for i, key in enumerate(expressions))
    assert check.returncode == 0, f"{check.stdout}{check.stderr}\n{names}"


def test_dashboard_and_alerts_use_only_metrics_the_service_declares() -> None:
    declared = declared_metrics()
    assert len(declared) >= 10
    exported = {name for names in declared.values() for name in names}
    dashboard = _dashboard()
    variables = [json.dumps(v.get("query", "")) for v in dashboard["templating"]["list"]]
    queries = {
        DASHBOARD.name: [*dashboard_expressions(dashboard).values(), *variables],
        ALERTS.name: [rule["expr"] for rule in _alert_rules()],
        ALERT_TESTS.name: [
            series["series"]
            for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
            for series in test["input_series"]
        ],
    }
    for name, texts in queries.items():
        used = {metric for text in texts for metric in METRIC_NAME.findall(text)}
        assert used, name
        assert used <= exported, f"{name} uses undeclared {sorted(used - exported)}"
    shown = {m for text in queries[DASHBOARD.name] for m in METRIC_NAME.findall(text)}
    missing = [metric for metric, names in declared.items() if not shown & set(names)]
    assert not missing, f"no dashboard panel shows {missing}"


def test_every_panel_queries_the_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(_panels(dashboard["panels"]))
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == DATASOURCE, panel["title"]
        assert panel["type"] == "row" or panel["targets"], f"{panel['title']} has no query"
