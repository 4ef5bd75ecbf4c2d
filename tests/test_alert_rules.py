"""Alert rules: valid for promtool, each alert fires and stays quiet as its unit tests
say, broken thresholds make those tests fail, and the committed file is the rendering."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitoring.catalog import known_series, promql_metric_names
from monitoring.rules import RULES_FILE, Thresholds, render

REPO = Path(__file__).resolve().parent.parent
RULES_TEST = REPO / "monitoring" / "alerts_test.yml"
ALERTS = {
    "EvalTrainReturnDivergence",
    "ActionEntropyCollapse",
    "RewardVarianceSpike",
    "TrainingStalled",
    "InferenceLatencyP99High",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message + "; apt-get install prometheus to run these tests")
    return found


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_promtool_accepts_the_rules(promtool):
    result = run(promtool, "check", "rules", RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say(promtool):
    result = run(promtool, "test", "rules", RULES_TEST)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == quiet == ALERTS


# (flag, value, what promtool must report): a lenient threshold misses a firing case
# ("got:[]"); a strict one fires on a series the unit tests expect to stay quiet.
BROKEN = [
    ("--divergence-ratio", "0.1", "got:[]"),
    ("--divergence-ratio", "0.9", 'run="healthy"'),
    ("--entropy-floor", "0.001", "got:[]"),
    ("--entropy-floor", "0.6", 'run="dip"'),
    ("--variance-factor", "20", "got:[]"),
    ("--variance-factor", "1.5", 'run="growing"'),
    ("--latency-p99-seconds", "0.2", "got:[]"),
    ("--latency-p99-seconds", "0.005", 'job="serve-fast"'),
]


@pytest.mark.parametrize(("flag", "value", "symptom"), BROKEN)
def test_a_broken_threshold_fails_the_unit_tests(promtool, tmp_path, flag, value, symptom):
    rendered = run(
        sys.executable, "-m", "monitoring.rules", flag, value, "--out", tmp_path / "alerts.yml"
    )
    assert rendered.returncode == 0, rendered.stderr
    shutil.copy(RULES_TEST, tmp_path / "alerts_test.yml")  # rule_files: alerts.yml, beside it
    result = run(promtool, "test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0, f"{flag} {value} passed the unit tests"
    assert symptom in result.stdout + result.stderr


def test_committed_rules_are_the_default_rendering():
    assert RULES_FILE.read_text(encoding="utf-8") == render(Thresholds()), (
        "monitoring/alerts.yml is stale: run `python -m monitoring.rules --out "
        "monitoring/alerts.yml`"
    )


def test_cli_renders_thresholds_and_a_prometheus_rule(tmp_path):
    out = tmp_path / "rule.yaml"
    result = run(
        sys.executable,
        "-m",
        "monitoring.rules",
        "--format",
        "prometheusrule",
        "--entropy-floor",
        "0.05",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(out.read_text())
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["name"]
    plain = yaml.safe_load(render(Thresholds(entropy_floor=0.05)))
    assert document["spec"] == plain
    exprs = {r["alert"]: r["expr"] for r in plain["groups"][0]["rules"]}
    assert exprs["ActionEntropyCollapse"] == "turnwise_action_entropy_nats < 0.05"


def test_cli_refuses_a_nonsense_threshold():
    result = run(sys.executable, "-m", "monitoring.rules", "--variance-factor", "0.5")
    assert result.returncode == 2
    assert "variance_factor must exceed 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_rules_use_only_catalog_metrics():
    rules = yaml.safe_load(RULES_FILE.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        names = promql_metric_names(rule["expr"])
        assert names, rule["expr"]
        assert all(known_series(n) for n in names), (rule["alert"], names)
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert "{{ $value" in rule["annotations"]["description"]
