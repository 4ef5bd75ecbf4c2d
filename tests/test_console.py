"""The user's first hour on the console: evaluation lines, the final line, no false
divergence alarm, progress and log lines apart at 80 columns, ``--once`` read-only; and
the same runs' TensorBoard scalars (``monitoring.tensorboard=true``) read back from the
event files, on Warehouse and on Gymnasium's CartPole."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_checkpoint
from rich.console import Console

from evaluator.evaluator import EvaluationTable
from evaluator.metrics import DIVERGENCE_WARMUP_ENV_STEPS, divergence
from learner.progress import ConsoleLogHandler, ConsoleProgress, evaluation_line, read_metrics
from monitoring.tensorboard import read_scalars
from turnwise.checkpoint_store import open_store
from turnwise.config import compose_config

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = re.compile(  # the whole progress line, nothing glued on, nothing cut short
    r"^train (?P<bar>[━╸╺ ]+) [\d,]+/[\d,]+ steps (?:[\d,]+/s  return (?:-?[\d.]+|nan))?"
    r" \d+:\d\d:\d\d$"
)
EVAL_LINE = re.compile(  # as it lands (the final line's "last eval" is another)
    r"(?<!last )eval ([\d,]+): (-?\d+% of oracle|return -?[\d.]+)(, \w+ [\d.%]+)*"
)


def run_in_terminal(command: list[str], columns: int = 80, timeout: float = 900) -> str:
    """Run ``command`` on a pseudo-terminal ``columns`` wide; everything it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "24", "TERM": "xterm-256color"}
    process = subprocess.Popen(
        command, cwd=REPO, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunks.append(os.read(master, 65536))
                except OSError:  # EIO: every writer closed the terminal
                    break
            elif process.poll() is not None:
                break  # exited, and nothing more for a second (Ray's children may hold it)
        assert process.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def learner(run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "learner",
        f"hydra.run.dir={run_dir}",
        "monitoring.metrics_port=-1",
        "monitoring.tensorboard=true",  # read back by the tracking test
        *overrides,
    ]


def segments(output: str) -> list[str]:
    """What the terminal shows line by line: split at CR and LF, escapes removed."""
    return [ANSI.sub("", part) for part in re.split(r"[\r\n]", output) if ANSI.sub("", part)]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A short default Warehouse run that learns, on an 80-column terminal with the
    progress bar on: its run directory and console output."""
    run_dir = tmp_path_factory.mktemp("warehouse")
    command = learner(
        run_dir,
        "+exp=warehouse",
        "train.env_steps=400000",
        "evaluator.every_env_steps=100000",
        "checkpoint.every_env_steps=100000",
        "train.progress=true",
    )
    yield run_dir, run_in_terminal(command)


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A short CartPole run with its output captured (not a terminal)."""
    run_dir = tmp_path_factory.mktemp("cartpole")
    command = learner(
        run_dir,
        "+exp=cartpole",
        "train.env_steps=40000",
        "evaluator.every_env_steps=20000",
        "checkpoint.every_env_steps=20000",
    )
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    yield run_dir, run.stdout + run.stderr


# -- the console during a run ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("run", ["warehouse", "cartpole"])
def test_each_evaluation_prints_one_line_as_it_lands(run, request):
    run_dir, output = request.getfixturevalue(run)
    evaluations = rows(run_dir / "evaluations.jsonl")
    assert len(evaluations) >= 2
    shown = [m.group(0) for m in EVAL_LINE.finditer(ANSI.sub("", output))]
    assert shown == [evaluation_line(row) for row in evaluations]
    if run == "warehouse":
        assert all("of oracle" in line and "success" in line for line in shown)
    else:  # no baseline: the return, and no success rate
        assert all("return" in line and "success" not in line for line in shown)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["warehouse", "cartpole"])
def test_the_final_line_reports_the_last_evaluation(run, request):
    run_dir, output = request.getfixturevalue(run)
    last = rows(run_dir / "evaluations.jsonl")[-1]
    done = [s for s in segments(output) if s.startswith("done:")]
    assert len(done) == 1 and "train return nan" not in done[0]
    score = (
        f"{last['fraction_of_baseline']:.0%} of oracle (return {last['eval_return']:.2f})"
        if run == "warehouse"
        else f"return {last['eval_return']:.2f}"
    )
    assert f"last eval {last['env_steps']:,}: {score}" in done[0]


@pytest.mark.slow
def test_a_default_run_that_learns_raises_no_divergence_alert(warehouse):
    run_dir, output = warehouse
    evaluations = rows(run_dir / "evaluations.jsonl")
    assert evaluations[-1]["fraction_of_baseline"] >= 0.6  # it learns
    assert evaluations[-1]["eval_train_ratio"] is not None  # past the warm-up: armed
    assert not any(row["divergence_alert"] for row in evaluations)
    assert rows(run_dir / "alerts.jsonl") == [] and "ALERT" not in output


@pytest.mark.slow
def test_log_lines_and_the_progress_bar_do_not_collide_at_80_columns(warehouse):
    _, output = warehouse
    shown = segments(output)
    bars = [s for s in shown if s.startswith("train ")]
    assert bars, "no progress bar on the terminal"
    for line in bars:
        match = BAR.match(line)
        assert match, f"progress line cut short or glued to: {line!r}"
        assert len(match.group("bar")) >= 10 and len(line) <= 80
    logged = [s for s in shown if "saved checkpoint" in s or EVAL_LINE.search(s)]
    assert logged and all(s.startswith("INFO ") for s in logged), logged  # each its own line


@pytest.mark.slow
def test_the_final_checkpoint_is_saved_and_logged_once(warehouse):
    run_dir, _ = warehouse
    final = open_store(str(run_dir / "checkpoints")).pointer("latest")
    log = (run_dir / "__main__.log").read_text()
    assert log.count(f"saved checkpoint {run_dir / 'checkpoints' / final} ") == 1
    assert log.count(f"pointer latest -> {final} ") == 1


@pytest.mark.slow
@pytest.mark.parametrize("run", ["warehouse", "cartpole"])
def test_tensorboard_holds_every_metrics_row_and_every_evaluation(run, request):
    run_dir, _ = request.getfixturevalue(run)
    scalars = read_scalars(run_dir / "tensorboard")
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [step for step, _ in scalars["train/loss"]] == [r["env_steps"] for r in metrics]
    assert [v for _, v in scalars["train/entropy"]] == pytest.approx(
        [r["entropy"] for r in metrics], rel=1e-6
    )
    evaluations = EvaluationTable(run_dir).rows()
    assert len(evaluations) >= 2
    logged = scalars["eval/eval_return"]
    assert [step for step, _ in logged] == [r["env_steps"] for r in evaluations]
    assert [v for _, v in logged] == pytest.approx([r["eval_return"] for r in evaluations])
    assert "eval/success_rate" in scalars or "eval/state_coverage" in scalars


# -- the pieces, in-process ----------------------------------------------------------------
def test_the_progress_line_fits_80_columns_and_logs_print_above_it():
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    handler = ConsoleLogHandler(console=console)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress = ConsoleProgress(10_000_000, 0, enabled=True)
        row = {"env_steps_per_second": 12345.0, "train_return": -123.45, "policy_lag": 3.0}
        progress.update(9_999_999, row)
        logging.getLogger("learner.driver").warning("eval 9,999,999: a log line")
        progress.close()
    finally:
        root.removeHandler(handler)
    shown = segments(buffer.getvalue())
    bars = [s for s in shown if s.startswith("train ")]
    assert bars and all(BAR.match(s) and len(BAR.match(s).group("bar")) >= 10 for s in bars)
    assert any(s.startswith("WARNING  eval 9,999,999: a log line") for s in shown)


def test_off_a_terminal_a_record_is_one_plain_unwrapped_line():
    buffer = io.StringIO()
    handler = ConsoleLogHandler(console=Console(file=buffer, width=40))
    record = logging.LogRecord("learner.driver", logging.INFO, "", 0, "x" * 100, None, None)
    handler.emit(record)
    (line,) = buffer.getvalue().splitlines()
    assert line.endswith("][learner.driver][INFO] - " + "x" * 100)


def test_no_progress_bar_off_a_terminal():
    assert ConsoleProgress(100, 0, enabled=True)._progress is None  # pytest captures stdout


# -- the divergence rule -------------------------------------------------------------------
LEARNS = [  # (env steps, eval return, train return) of a default Warehouse run (oracle 32.94)
    (53248, -0.71, -0.39),
    (102400, -1.01, 2.72),
    (151552, 1.27, 8.73),
    (200704, -1.04, 28.48),  # the greedy policy lags the stochastic one it was trained as
    (253952, 16.66, 31.97),
    (303104, 27.70, 32.62),
    (401408, 29.13, 32.91),
]
HACKS = [  # the same with every pick paid and no delivery (tests/test_evaluator.py)
    (401408, 1.61, 13.05),
    (450560, 3.57, 14.54),
    (602112, 7.10, 20.08),
]


@pytest.mark.parametrize(("steps", "eval_return", "train_return"), LEARNS)
def test_a_run_that_learns_never_crosses_the_threshold(steps, eval_return, train_return):
    ratio = divergence(eval_return, train_return, steps, baseline_return=32.94)
    assert ratio is None or ratio >= 0.8


@pytest.mark.parametrize(("steps", "eval_return", "train_return"), HACKS)
def test_reward_hacking_after_the_warm_up_crosses_it(steps, eval_return, train_return):
    assert divergence(eval_return, train_return, steps, baseline_return=32.94) < 0.5


def test_the_divergence_rule_on_costs_near_zero_and_in_the_warm_up():
    after = DIVERGENCE_WARMUP_ENV_STEPS
    assert divergence(40.0, 50.0, after) == pytest.approx(0.8)  # eval / train
    assert divergence(-150.0, -100.0, after) == pytest.approx(0.5)  # 1.5x training's cost
    assert divergence(-0.2, 0.1, after, baseline_return=30.0) == pytest.approx(0.9)  # floor 3
    assert divergence(-0.2, 0.1, after) < 0  # no baseline, no floor: below anything
    assert divergence(0.0, 100.0, after - 1) is None  # warm-up
    assert divergence(0.0, float("nan"), after) is None
    assert divergence(0.0, 0.0, after) is None


# -- python -m evaluator --once ---------------------------------------------------------
def evaluate_once(run_dir: Path, *flags: str) -> dict:
    command = [sys.executable, "-m", "evaluator", str(run_dir), "--once", *flags]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def test_evaluate_once_leaves_the_run_as_it_was_unless_asked_to_record(tmp_path):
    store = tmp_path / "checkpoints"
    make_checkpoint(store, env_steps=1000)
    make_checkpoint(store, env_steps=2000)
    open_store(str(store)).set_pointer("best", "step-000000001000")
    config = compose_config(["+exp=warehouse", "evaluator.episodes=2"])
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    table = tmp_path / "evaluations.jsonl"
    table.write_text('{"checkpoint": "step-000000001000", "eval_return": 1e9}\n')
    before = table.read_bytes()
    assert evaluate_once(tmp_path)["checkpoint"] == "step-000000002000"
    assert table.read_bytes() == before
    assert open_store(str(store)).pointer("best") == "step-000000001000"
    evaluate_once(tmp_path, "--record")
    assert [row["checkpoint"] for row in rows(table)][-1] == "step-000000002000"
    assert len(rows(table)) == 2
