"""A real Prometheus server scrapes a training run; series stay bounded."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import ray
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from learner.driver import Trainer
from turnwise import metrics
from turnwise.config import compose_config

PROMETHEUS = shutil.which("prometheus")
TRAINING_SIX = (  # the health metrics a training run exports (latency comes from serving)
    "turnwise_episode_length_steps",
    "turnwise_action_entropy_nats",
    "turnwise_state_coverage_ratio",
    "turnwise_state_visitation_entropy",
    "turnwise_reward_variance",
    "turnwise_eval_train_return_ratio",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(url: str, timeout: float, what: str, alive=lambda: True) -> None:
    """Poll ``url`` until it answers 2xx (instead of sleeping a guessed time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            assert time.monotonic() < deadline and alive(), f"{what} did not start"
            time.sleep(0.3)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def prometheus(tmp_path):
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed (Debian package prometheus; .ci/run installs it)")
    target, web = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: turnwise\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
    )
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{web}"
    wait_until_answering(f"{base}/-/ready", 60, "prometheus", alive=lambda: server.poll() is None)
    yield base, target
    server.terminate()
    server.wait(timeout=30)


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    return get_json(url)["data"]["result"]


def short_run(tmp_path: Path, port: int, env_steps: int, every: int, *extra: str) -> Trainer:
    config = compose_config(
        [
            "+exp=warehouse",
            "train.progress=false",
            f"train.env_steps={env_steps}",
            f"evaluator.every_env_steps={every}",
            "evaluator.episodes=8",
            f"monitoring.metrics_port={port}",
            *extra,
        ]
    )
    trainer = Trainer(config, tmp_path)
    trainer.run()
    return trainer


def test_prometheus_scrapes_the_health_metrics_of_a_training_run(tmp_path, prometheus):
    base, port = prometheus
    # the endpoint lingers past the run (3 scrape intervals), so the final values are scraped
    # the divergence ratio exists from the warm-up on: here from the first evaluation
    warmup = "evaluator.divergence_warmup_env_steps=60000"
    trainer = short_run(tmp_path, port, 250_000, 60_000, "monitoring.linger_s=3", warmup)
    for name in (*TRAINING_SIX, "turnwise_env_steps_total", "turnwise_eval_return"):
        result = query(base, f"max_over_time({name}[10m])")
        assert result, f"{name} was never scraped"
        assert result[0]["metric"]["run"] == tmp_path.name
    steps = float(query(base, "max_over_time(turnwise_env_steps_total[10m])")[0]["value"][1])
    assert steps == trainer.counters.env_steps


def series(trainer: Trainer) -> set[tuple]:
    text = generate_latest(trainer.telemetry.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def declared_series() -> int:
    """Every series the exporter can ever have for one run: fixed by the code."""
    gauges = len(metrics.TRAINING_GAUGES) + len(metrics.EVALUATION_GAUGES)
    others = 1 + len(metrics.LOSSES) + 1 + len(metrics.COUNTERS) + 1  # variance, losses, age,
    return gauges + others  # counters, divergence alerts


def test_series_count_does_not_grow_with_states_or_episodes(tmp_path):
    short = short_run(tmp_path / "a", -1, 8_000, 4_096)
    longer = short_run(tmp_path / "b", -1, 60_000, 4_096)  # 7x the episodes and evaluations
    assert longer.counters.episodes > 5 * short.counters.episodes
    assert len(series(short)) <= len(series(longer)) <= declared_series()
    labels = {key for _, pairs in series(longer) for key, _ in pairs}
    assert labels <= {"run", "experiment", "kind"}
    kinds = {value for _, pairs in series(longer) for key, value in pairs if key == "kind"}
    assert kinds <= set(metrics.LOSSES)


def test_prometheus_scrapes_the_serving_inference_latency(tmp_path, prometheus):
    """The sixth health metric: inference latency, from the serving endpoint."""
    from ray import serve

    from serving.app import build_app
    from serving.testing import make_checkpoint
    from sims.warehouse import WarehouseEnv

    base, port = prometheus
    make_checkpoint(str(tmp_path / "checkpoints"))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(
            build_app({"checkpoint": str(tmp_path / "checkpoints")}),
            name="latency",
            route_prefix="/",
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{url}/healthz", 120, "serving")
        observation = WarehouseEnv().reset(seed=0)[0].tolist()
        body = json.dumps({"observation": observation}).encode()
        for _ in range(40):
            request = urllib.request.Request(
                f"{url}/v1/act", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        time.sleep(3)  # a few scrapes
        name = "turnwise_serve_inference_latency_seconds"
        counts = query(base, f"max_over_time({name}_count[10m])")
        assert counts and float(counts[0]["value"][1]) >= 40
        p99 = query(base, f"histogram_quantile(0.99, sum by (le) (rate({name}_bucket[1m])))")
        assert p99 and float(p99[0]["value"][1]) > 0
    finally:
        serve.shutdown()
