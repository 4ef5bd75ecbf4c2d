"""`python -m learner.report` on a real (short) training run."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
from matplotlib.image import imread

from learner.driver import train
from turnwise.config import compose_config

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("returns.png", "health.png", "visitation.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    config = compose_config(
        [
            "+exp=warehouse",
            "train.env_steps=8000",
            "evaluator.every_env_steps=4096",
            "actors.envs_per_actor=32",
            "actors.fragment_length=32",
            "train.progress=false",
            "monitoring.metrics_port=0",  # any free port: never collide with a real run
        ]
    )
    path = tmp_path_factory.mktemp("report-run")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        train(config, path)
    finally:
        ray.shutdown()
    return path


def report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "learner.report", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_report_writes_plots_and_a_summary(run_dir, tmp_path):
    out = tmp_path / "report"
    result = report(run_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    for name in PLOTS:
        width, height = png_size(out / name)
        assert width > 300 and height > 300, name
        pixels = imread(out / name)
        assert pixels.shape[:2] == (height, width)
        assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 50, name
    evaluations = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    assert len(evaluations) >= 2
    text = (out / "report.md").read_text()
    assert f"{evaluations[-1]['eval_return']:.3f}" in text
    assert f"{evaluations[-1]['baseline_return']:.3f}" in text
    assert "not served" in text  # no serving metrics given
    for name in PLOTS:
        assert f"]({name})" in text


def test_report_defaults_to_run_dir_report_and_reads_serving_metrics(run_dir, tmp_path):
    from serving.metrics import ServeMetrics

    serving = ServeMetrics(mirror_to_ray=False)
    for seconds in [0.0004] * 90 + [0.004] * 10:
        serving.observe_inference(seconds, rows=8)
    page = tmp_path / "serving.prom"
    page.write_bytes(serving.render())
    result = report(run_dir, "--serving-metrics", page)
    assert result.returncode == 0, result.stderr
    text = (run_dir / "report" / "report.md").read_text()
    assert "not served" not in text
    assert "| inference latency p99 | 4." in text  # within the 2.5-5 ms bucket


def test_alerts_are_listed(run_dir, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("metrics.jsonl", "evaluations.jsonl", "run.json"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    alert = {"alert": "EvalTrainDivergence", "checkpoint": "step-000000004096"}
    alert |= {"env_steps": 4096, "eval_train_ratio": 0.42, "time": 1.7e9}
    (copy / "alerts.jsonl").write_text(json.dumps(alert) + "\n")
    assert report(copy).returncode == 0
    text = (copy / "report" / "report.md").read_text()
    assert "| EvalTrainDivergence | step-000000004096 | 4096 | 42.0% |" in text


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_clear_error_without_a_run(tmp_path, case):
    target = tmp_path / "nope" if case == "missing" else tmp_path
    if case == "empty":
        (tmp_path / "metrics.jsonl").write_text("")
    result = report(target)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    expected = "does not exist" if case == "missing" else "no metrics in"
    assert expected in result.stderr and str(target) in result.stderr
