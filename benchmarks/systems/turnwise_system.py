"""turnwise as a benchmarked system: its own experiments, run as a user runs them.

A task runs ``+exp=<task name>`` (``warehouse``, ``warehouse_medium``,
``warehouse_large``...), with ``settings.extra["overrides"]`` after it (the suite's
plain-env case: ``env.vectorization=sync``; its scaling rows: the actor layout).
Throughput runs ``+exp=<task>`` (transition log and checkpoints on, as by default;
the evaluator off, as for the other systems' windows) for ``train.max_seconds``.
Time to solve runs the same experiment with its external evaluator on the common
held-out seeds; a curve point's time is the training loop's clock when its
checkpoint was written (turnwise evaluates beside training, so its evaluations cost
it whatever CPU they take, unlike the others' paused clock).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from benchmarks.systems.common import (
    EVAL_SEED,
    Budget,
    Settings,
    SolveRecorder,
    Task,
    finite_or_none,
    throughput_result,
)
from evaluator.evaluator import EvaluationTable
from learner.driver import Trainer
from learner.progress import read_metrics
from turnwise.config import compose_config

SYSTEM = "turnwise"


def overrides(task: Task, settings: Settings, *extra: str) -> list[str]:
    """The experiment as a user starts it, plus the benchmark's settings."""
    widths = ",".join(str(w) for w in settings.hidden_sizes)
    return [
        f"+exp={task.name}",
        f"learner.hidden_sizes=[{widths}]",
        f"train.seed={settings.seed}",
        "train.progress=false",
        "monitoring.metrics_port=-1",
        *settings.extra.get("overrides", []),
        *extra,
    ]


def throughput(task: Task, seconds: float, settings: Settings) -> dict[str, Any]:
    config = compose_config(
        overrides(
            task,
            settings,
            "train.env_steps=1000000000000",
            f"train.max_seconds={seconds}",
            "evaluator.enabled=false",
        )
    )
    with tempfile.TemporaryDirectory(prefix="turnwise-bench-") as run_dir:
        Trainer(config, Path(run_dir)).run()
        last = read_metrics(Path(run_dir) / "metrics.jsonl")[-1]
    return throughput_result(
        SYSTEM,
        task,
        last["env_steps"],
        last["time_s"],
        settings,
        num_actors=config.actors.num_actors,
        envs_per_actor=config.actors.envs_per_actor,
        fragment_length=config.actors.fragment_length,
        batch_rows=config.actors.envs_per_actor * config.actors.fragment_length,
    )


def time_to_solve(task: Task, budget: Budget, settings: Settings) -> dict[str, Any]:
    config = compose_config(
        overrides(
            task,
            settings,
            f"train.env_steps={budget.env_steps}",
            f"train.max_seconds={budget.seconds}",
            f"evaluator.every_env_steps={budget.eval_every_env_steps}",
            f"checkpoint.every_env_steps={budget.eval_every_env_steps}",
            f"evaluator.episodes={task.eval_episodes}",
            f"evaluator.seed={EVAL_SEED}",
        )
    )
    recorder = SolveRecorder(SYSTEM, task, budget, settings)
    with tempfile.TemporaryDirectory(prefix="turnwise-bench-") as run_dir:
        trainer = Trainer(config, Path(run_dir))
        watcher = _SolveWatcher(Path(run_dir), task, trainer)
        watcher.start()
        try:
            trainer.run()
        finally:
            watcher.done.set()
            watcher.join()
        metrics = read_metrics(Path(run_dir) / "metrics.jsonl")
        evaluations = EvaluationTable(run_dir).rows()
    for row in evaluations:
        at = next((m for m in metrics if m["env_steps"] >= row["env_steps"]), metrics[-1])
        recorder.add(
            {
                "seconds": at["time_s"],
                "env_steps": row["env_steps"],
                "train_return": finite_or_none(row.get("train_return")),
                "eval_return": row["eval_return"],
                "fraction_of_baseline": row.get("fraction_of_baseline"),
            }
        )
    if not recorder.stopped_by:  # the run's last evaluation fell just short of a cap
        recorder.stopped_by = "time cap" if metrics[-1]["time_s"] >= budget.seconds else "step cap"
    return recorder.result(
        num_actors=config.actors.num_actors, envs_per_actor=config.actors.envs_per_actor
    )


class _SolveWatcher(threading.Thread):
    """Stops the trainer once an evaluation row says the task is solved."""

    def __init__(self, run_dir: Path, task: Task, trainer: Trainer) -> None:
        super().__init__(daemon=True)
        self.table, self.task, self.trainer = EvaluationTable(run_dir), task, trainer
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            if any(self.task.is_solved(row) for row in self.table.rows()):
                self.trainer.stop()
                return
