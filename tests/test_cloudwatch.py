"""CloudWatch export against moto's server over real HTTP (boto3 is never patched)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from monitoring.catalog import BY_NAME, METRICS, row_samples
from monitoring.cloudwatch import (
    MAX_DATUMS_PER_CALL,
    MAX_PAYLOAD_BYTES,
    CloudWatchConfig,
    CloudWatchExporter,
    batches,
    encoded_size,
)

REPO = Path(__file__).resolve().parent.parent
SECRET = "testing"
TRAIN_ROW = {  # the keys of a metrics.jsonl row that the catalog reads
    "env_steps": 4096,
    "env_steps_per_second": 2000.0,
    "train_return": 5.0,
    "train_return_std": 2.0,
    "episode_length": 100.0,
    "entropy": 1.5,
    "policy_lag": 2.0,
    "policy_loss": -0.01,
    "value_loss": 0.2,
    "loss": 0.09,
    "dropped_batches": 1,
    "actor_failures": 0,
    "updates": 4,
}
EVAL_ROW = {  # an evaluations.jsonl row that raised the divergence alert
    "eval_return": 3.0,
    "fraction_of_baseline": 0.1,
    "eval_train_ratio": 0.6,
    "action_entropy": 1.2,
    "state_coverage": 0.25,
    "visitation_entropy": 0.7,
    "success_rate": 0.5,
    "milestone_without_success_rate": 0.125,
    "divergence_alert": True,
    "episode_length": 80.0,  # the evaluation's, not training's: not exported
    "train_return": 5.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def aws():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        mp.delenv("AWS_PROFILE", raising=False)
        yield f"http://127.0.0.1:{port}"
    server.stop()


def exporter(run: str, **settings) -> CloudWatchExporter:
    config = CloudWatchConfig(enabled=True, flush_interval_s=1e9, **settings)
    return CloudWatchExporter(config, run=run, experiment="Warehouse-v0")


def dims(run: str, **extra: str) -> list[dict[str, str]]:
    pairs = {"run": run, "experiment": "Warehouse-v0", **extra}
    return [{"Name": k, "Value": v} for k, v in pairs.items()]


def statistics(client, namespace: str, name: str, dimensions, *stats: str) -> dict[str, float]:
    now = datetime.now(UTC)
    points = client.get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=dimensions,
        StartTime=now - timedelta(hours=2),
        EndTime=now + timedelta(minutes=5),
        Period=3600,
        Statistics=list(stats),
    )["Datapoints"]
    if not points:
        return {}
    sums = {s: sum(p[s] for p in points) for s in stats if s in ("Sum", "SampleCount")}
    extremes = {s: min(p[s] for p in points) for s in stats if s == "Minimum"}
    return {**sums, **extremes}


def test_rows_read_back_under_the_namespace_and_dimensions(aws):
    cw = exporter("rows", namespace="turnwise-test", dimensions={"cluster": "ci"})
    cw.publish(TRAIN_ROW)
    cw.publish(EVAL_ROW)
    assert cw.flush() == 1 and cw.failures == 0
    listed = cw.client.list_metrics(Namespace="turnwise-test")["Metrics"]
    names = {m["MetricName"] for m in listed}
    published = {BY_NAME[n].cloudwatch_name for n, _, _ in row_samples(TRAIN_ROW)}
    published |= {BY_NAME[n].cloudwatch_name for n, _, _ in row_samples(EVAL_ROW)}
    assert names == published
    assert {"episode_length_steps", "action_entropy_nats", "reward_variance"} <= names
    assert {"state_coverage_ratio", "state_visitation_entropy", "eval_train_return_ratio"} <= names
    kinds = {
        d["Value"]
        for m in listed
        if m["MetricName"] == "learner_loss"
        for d in m["Dimensions"]
        if d["Name"] == "kind"
    }
    assert kinds == {"policy", "value", "total"}
    run_dims = dims("rows", cluster="ci")

    def read(name: str, stat: str = "Sum") -> float:
        return statistics(cw.client, "turnwise-test", name, run_dims, stat)[stat]

    assert read("eval_train_return_ratio", "Minimum") == pytest.approx(0.6)
    assert read("reward_variance") == pytest.approx(4.0)  # train_return_std squared
    assert read("episode_length_steps") == pytest.approx(100.0)  # training's, not eval's
    assert read("divergence_alerts") == 1.0


def test_counters_go_out_as_increments(aws):
    cw = exporter("counters")
    for steps in (1024, 2048, 4096):
        cw.publish({**TRAIN_ROW, "env_steps": steps})
    cw.flush()
    got = statistics(cw.client, "turnwise", "env_steps", dims("counters"), "Sum", "SampleCount")
    assert got == {"Sum": 4096.0, "SampleCount": 3.0}


def test_latency_observations_go_out_as_values_and_counts(aws):
    cw = exporter("serve")
    observations = [0.001] * 50 + [0.002 + i * 1e-5 for i in range(200)]  # 201 distinct
    cw.put({"turnwise_serve_inference_latency_seconds": observations})
    cw.flush()
    got = statistics(
        cw.client,
        "turnwise",
        "serve_inference_latency_seconds",
        dims("serve"),
        "SampleCount",
        "Sum",
    )
    assert got["SampleCount"] == len(observations)
    assert got["Sum"] == pytest.approx(sum(observations))


def test_more_datums_than_one_call_allows_are_split_and_all_arrive(aws):
    cw = exporter("many")
    requests: list[int] = []  # datums per PutMetricData request, as boto3 is given them
    cw.client.meta.events.register(
        "before-parameter-build.cloudwatch.PutMetricData",
        lambda params, **_: requests.append(len(params["MetricData"])),
    )
    gauges = [m.name for m in METRICS if m.kind == "gauge" and m.name != "turnwise_learner_loss"]
    rows = 2 * MAX_DATUMS_PER_CALL // len(gauges) + 7
    start = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(rows):
        cw.put(dict.fromkeys(gauges, float(i)), timestamp=start + timedelta(seconds=i))
    total = rows * len(gauges)
    assert total > 2 * MAX_DATUMS_PER_CALL
    assert cw.flush() == len(requests) == -(-total // MAX_DATUMS_PER_CALL)
    assert max(requests) <= MAX_DATUMS_PER_CALL and sum(requests) == total
    for name in gauges:
        cw_name = name.removeprefix("turnwise_")
        got = statistics(cw.client, "turnwise", cw_name, dims("many"), "SampleCount", "Sum")
        assert got["SampleCount"] == rows, name
        assert got["Sum"] == sum(range(rows)), name


def test_large_dimensions_split_by_payload_size_and_all_arrive(aws):
    wide = {f"d{i:02d}": chr(ord("a") + i % 26) * 1000 for i in range(27)}  # 29 with run, exp
    cw = exporter("wide", dimensions=wide)
    sizes: list[int] = []  # bytes of each request body as sent
    cw.client.meta.events.register(
        "before-call.cloudwatch.PutMetricData",
        lambda params, **_: sizes.append(len(params["body"])),
    )
    datums = 50  # far below the datum limit, above the payload limit
    for i in range(datums):
        cw.put({"turnwise_eval_return": float(i)})
    assert cw.flush() == len(sizes) >= 2 and cw.failures == 0
    assert sum(sizes) > MAX_PAYLOAD_BYTES and max(sizes) < MAX_PAYLOAD_BYTES
    got = statistics(cw.client, "turnwise", "eval_return", dims("wide", **wide), "SampleCount")
    assert got["SampleCount"] == datums


def test_batches_respect_both_limits():
    datum = {"MetricName": "m", "Value": 1.0, "Dimensions": [{"Name": "x", "Value": "v" * 900}]}
    size = encoded_size(datum)
    by_count = list(batches([datum] * 2500, max_datums=1000, max_bytes=10**9))
    assert [len(b) for b in by_count] == [1000, 1000, 500]
    by_size = list(batches([datum] * 50, max_datums=1000, max_bytes=10 * size))
    assert [len(b) for b in by_size] == [10] * 5


def test_divergence_alarm_reads_back(aws):
    topic = "arn:aws:sns:us-east-1:123456789012:turnwise-alerts"
    cw = exporter("alarmed", alarm_actions=[topic], alarm_evaluation_periods=2)
    name = cw.ensure_divergence_alarm()
    assert cw.ensure_divergence_alarm() == name  # idempotent: updates in place
    alarms = cw.client.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm["MetricName"] == "eval_train_return_ratio"
    assert alarm["Namespace"] == "turnwise"
    assert alarm["Threshold"] == 0.8
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["EvaluationPeriods"] == 2
    assert alarm["Dimensions"] == dims("alarmed")
    assert alarm["AlarmActions"] == [topic] and alarm["ActionsEnabled"]


def test_disabled_exporter_makes_no_call_and_no_client(tmp_path):
    """Pointed at a closed port, a disabled exporter neither fails nor waits, and boto3
    is not even imported (so no client can exist)."""
    script = (
        "import sys, time\n"
        "from monitoring.cloudwatch import CloudWatchConfig, CloudWatchExporter\n"
        "started = time.monotonic()\n"
        "cw = CloudWatchExporter(CloudWatchConfig(flush_interval_s=0), 'off', 'Warehouse-v0')\n"
        f"cw.publish({TRAIN_ROW!r}); cw.publish({EVAL_ROW!r})\n"
        "cw.put({'turnwise_eval_return': 1.0})\n"
        "assert cw.flush() == 0 and cw.ensure_divergence_alarm() is None\n"
        "cw.close()\n"
        "assert cw.client is None and cw.calls == 0\n"
        "assert not {'boto3', 'botocore'} & set(sys.modules), 'boto3 was imported'\n"
        "print(time.monotonic() - started)\n"
    )
    closed = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 1.0


def test_an_unreachable_endpoint_is_logged_not_raised(aws, monkeypatch, caplog):
    """The contrast to the disabled case: enabled, the closed port is tried and fails;
    training goes on, and neither failure nor success logs the credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    caplog.set_level(logging.DEBUG, logger="monitoring")
    cw = exporter("unreachable")
    cw.put({"turnwise_eval_return": 1.0})
    started = time.monotonic()
    assert cw.flush() == 0
    assert cw.failures == 1 and time.monotonic() - started < 30
    assert "PutMetricData of 1 datums failed" in caplog.text
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    ok = exporter("reachable")
    ok.put({"turnwise_eval_return": 1.0})
    assert ok.flush() == 1
    ok.ensure_divergence_alarm()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("monitoring")]
    assert messages and not any(SECRET in m for m in messages)


def test_too_many_dimensions_are_refused():
    many = {f"d{i}": "x" for i in range(28)}
    with pytest.raises(ValueError, match="30 dimensions"):
        CloudWatchExporter(CloudWatchConfig(dimensions=many), "r", "Warehouse-v0")
    with pytest.raises(ValueError, match="1-1024"):
        CloudWatchExporter(CloudWatchConfig(dimensions={"d": "x" * 1025}), "r", "Warehouse-v0")
