"""The Grafana dashboard and the metric catalog: valid JSON, valid PromQL, fixed names
only, every health metric on a panel; the catalog matches the exporters and the docs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.catalog import BY_NAME, METRICS, known_series, promql_metric_names, row_samples

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "monitoring" / "grafana" / "turnwise.json"
DOCS = REPO / "docs" / "monitoring.md"
LABEL_VALUES = re.compile(r"^label_values\((?P<expr>.+),\s*\w+\)$")
VARIABLES = {"$__rate_interval": "5m", "$experiment": ".*", "$run": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def expressions(board: dict) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(LABEL_VALUES.match(variable["query"]["query"])["expr"])
    return exprs


def test_dashboard_is_importable_json_with_templated_datasource_and_run():
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["run"]["query"]["query"].startswith("label_values(turnwise_env_steps_total")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_dashboard_queries_use_only_the_fixed_metric_names():
    for expr in expressions(dashboard()):
        names = promql_metric_names(expr)
        assert names, expr
        unknown = {n for n in names if not known_series(n)}
        assert not unknown, f"{expr}: {unknown}"


def test_dashboard_shows_the_six_health_metrics_throughput_lag_and_oracle():
    used = set().union(*(promql_metric_names(e) for e in expressions(dashboard())))
    used = {n.removesuffix("_bucket") for n in used}
    health = {m.name for m in METRICS if m.health}
    assert len({BY_NAME[n].health for n in health}) == 6
    required = health | {
        "turnwise_env_steps_total",
        "turnwise_policy_lag_versions",
        "turnwise_eval_return",
        "turnwise_eval_fraction_of_baseline",
    }
    assert required <= used, required - used
    training_and_eval = {m.name for m in METRICS if m.source != "serving"}
    for panel in panels(dashboard()):  # training series are filtered by the run variable
        for target in panel["targets"]:
            if promql_metric_names(target["expr"]) & training_and_eval:
                assert 'run=~"$run"' in target["expr"], target["expr"]


def test_dashboard_queries_parse(tmp_path):
    """promtool parses every query (as a recording rule, variables substituted)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not found (Debian package prometheus); CI must install it")
        pytest.skip("promtool not found (Debian package prometheus)")
    rules = []
    for i, expr in enumerate(expressions(dashboard())):
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def own_labels(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("run", "experiment")))


def test_training_exporter_uses_the_catalog_names_and_row_keys():
    """The lead's Prometheus exporter and this catalog agree series by series."""
    from turnwise.metrics import TrainingMetrics

    train = {
        "env_steps": 2048,
        "env_steps_per_second": 900.0,
        "train_return": 4.0,
        "train_return_std": 3.0,
        "episode_length": 90.0,
        "entropy": 1.1,
        "policy_lag": 1.0,
        "policy_loss": 0.1,
        "value_loss": 0.2,
        "loss": 0.3,
        "dropped_batches": 2,
        "actor_failures": 1,
    }
    evaluation = {
        "eval_return": 2.0,
        "fraction_of_baseline": 0.2,
        "eval_train_ratio": 0.5,
        "action_entropy": 0.9,
        "state_coverage": 0.3,
        "visitation_entropy": 0.6,
        "success_rate": 0.25,
        "milestone_without_success_rate": 0.1,
        "divergence_alert": True,
    }
    metrics = TrainingMetrics(run="r", experiment="Warehouse-v0")
    metrics.observe_update(train)
    metrics.observe_evaluation(evaluation)
    metrics.observe_checkpoint()
    exported = {
        (sample.name, own_labels(sample.labels)): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
    expected = {m.name for m in METRICS if m.source != "serving"}
    assert {name for name, _ in exported} == expected
    for name, labels, value in row_samples(train) + row_samples(evaluation):
        assert exported[(name, tuple(sorted(labels.items())))] == pytest.approx(value), name


def test_serving_exports_the_catalog_serving_names():
    from serving.metrics import SPECS

    serving = {m.name: m for m in METRICS if m.source == "serving"}
    for name, metric in serving.items():
        assert name in SPECS, name
        assert SPECS[name][0] == metric.kind
        assert set(SPECS[name][2]) == set(metric.labels), name


def test_docs_table_lists_every_metric():
    text = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(turnwise_\w+)`", text, flags=re.MULTILINE))
    assert documented == set(BY_NAME)
