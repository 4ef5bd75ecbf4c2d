"""`python -m learner` as users run it: the artifacts it leaves, and resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.progress import read_metrics
from turnwise.checkpoint_store import open_store

REPO = Path(__file__).resolve().parent.parent
FAST = ["actors.envs_per_actor=32", "actors.fragment_length=32", "train.progress=false"]


def learner_command(run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "learner",
        "+exp=warehouse",
        *FAST,
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def test_the_documented_short_run_leaves_every_artifact(tmp_path):
    run = subprocess.run(
        learner_command(tmp_path, "train.env_steps=20000"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "config.json").exists() and (tmp_path / ".hydra" / "config.yaml").exists()
    assert read_metrics(tmp_path / "metrics.jsonl")
    assert list((tmp_path / "transitions").glob("actor-*/part-*.parquet"))
    assert open_store(str(tmp_path / "checkpoints")).list()


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint_after_a_kill(tmp_path):
    killed = subprocess.Popen(
        learner_command(tmp_path, "train.env_steps=100000000", "checkpoint.every_env_steps=4000"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store = open_store(str(tmp_path / "checkpoints"))
    deadline = time.monotonic() + 180
    while len(store.list()) < 2:
        assert time.monotonic() < deadline and killed.poll() is None, "no checkpoints appeared"
        time.sleep(0.5)
    os.killpg(killed.pid, signal.SIGKILL)  # the driver and the Ray it started, no cleanup
    killed.wait()
    at_kill = max(int(name.split("-")[1]) for name in store.list())
    resumed = subprocess.run(
        learner_command(tmp_path, f"train.env_steps={at_kill + 8000}", "resume=true"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = read_metrics(tmp_path / "metrics.jsonl")  # cut back to the checkpoint on resume
    steps = [r["env_steps"] for r in rows]
    assert steps == sorted(set(steps))  # the redone stretch is not logged twice
    after = [r for r in rows if r["env_steps"] > at_kill]
    batch_rows = 32 * 32  # one actor batch: envs_per_actor x fragment_length
    assert after[0]["env_steps"] == at_kill + batch_rows  # counters continue from the checkpoint
    assert after[0]["policy_version"] > 1
    assert int(store.pointer("latest").split("-")[1]) >= at_kill + 8000
