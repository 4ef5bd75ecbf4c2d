"""Experiment tracking: a run's metrics and evaluations as TensorBoard scalars, read back
from the event files, on Warehouse and on Gymnasium's CartPole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.evaluator import EvaluationTable
from learner.progress import read_metrics
from monitoring.tensorboard import read_scalars

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "warehouse": ["+exp=warehouse", "train.env_steps=16384", "evaluator.every_env_steps=8192"],
    "cartpole": ["+exp=cartpole", "train.env_steps=8192", "evaluator.every_env_steps=4096"],
}


@pytest.mark.parametrize("name", RUNS)
def test_tensorboard_holds_every_metrics_row_and_every_evaluation(tmp_path, name):
    command = [sys.executable, "-m", "learner", *RUNS[name], "monitoring.tensorboard=true"]
    command += ["checkpoint.every_env_steps=4096", "train.progress=false"]
    command += ["monitoring.metrics_port=-1", f"hydra.run.dir={tmp_path}"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    scalars = read_scalars(tmp_path / "tensorboard")
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert [step for step, _ in scalars["train/loss"]] == [r["env_steps"] for r in metrics]
    assert [v for _, v in scalars["train/entropy"]] == pytest.approx(
        [r["entropy"] for r in metrics], rel=1e-6
    )
    evaluations = EvaluationTable(tmp_path).rows()
    assert len(evaluations) >= 2
    logged = scalars["eval/eval_return"]
    assert [step for step, _ in logged] == [r["env_steps"] for r in evaluations]
    assert [v for _, v in logged] == pytest.approx([r["eval_return"] for r in evaluations])
    assert "eval/success_rate" in scalars or "eval/state_coverage" in scalars
