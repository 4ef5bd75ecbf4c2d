"""The evaluator as a Ray actor beside training: asked, never waited for."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from evaluator.evaluator import Evaluator
from turnwise.config import Config, evaluation_env

log = logging.getLogger(__name__)


def evaluator_actor_name(run_dir: Path) -> str:
    return f"turnwise-evaluator@{Path(run_dir).resolve()}"


class EvaluatorActor(Evaluator):
    """The evaluator in its own process: background work that yields the CPU to
    training (``evaluator.niceness``) and runs torch on one thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        torch.set_num_threads(1)
        if self.config.niceness > 0:
            os.nice(self.config.niceness)

    def ready(self) -> bool:
        """Started, with the baseline computed (so a first evaluation is quick)."""
        self.baseline_return()
        return True


class RemoteEvaluator:
    """Keeps at most one ``evaluate_pending`` call in flight; a request made while one
    runs is remembered, and a crashed (restarted) evaluator is simply asked again."""

    def __init__(self, config: Config, run_dir: Path, store_uri: str) -> None:
        cfg = config.evaluator
        self.actor = (
            ray.remote(EvaluatorActor)
            .options(
                name=evaluator_actor_name(run_dir),
                num_cpus=cfg.num_cpus,
                max_restarts=cfg.max_restarts,
            )
            .remote(store_uri, evaluation_env(cfg, config.env), cfg, str(run_dir))
        )
        self.pending: ray.ObjectRef | None = None
        self.again = False
        self.failures = 0
        self.results: list[dict[str, Any]] = []

    def request(self) -> None:
        if self.pending is None:
            self.pending = self.actor.evaluate_pending.remote()
        else:
            self.again = True

    def poll(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Collect a finished evaluation, if any; never blocks longer than ``timeout``."""
        if self.pending is None:
            return []
        ready, _ = ray.wait([self.pending], timeout=timeout)
        if not ready:
            return []
        self.pending, rows = None, []
        try:
            rows = ray.get(ready[0])
        except (RayActorError, RayTaskError) as error:
            self.failures += 1
            self.again = True
            log.warning("evaluator failed (%s); Ray restarts it", _last_line(error))
        if self.again:
            self.again = False
            self.request()
        self.results += rows
        return rows

    def drain(self, timeout: float) -> list[dict[str, Any]]:
        """At the end of a run: let queued evaluations finish, within ``timeout`` s."""
        rows: list[dict[str, Any]] = []
        for _ in range(3):
            rows += self.poll(timeout)
            if self.pending is None:
                break
        return rows


def _last_line(error: Exception) -> str:
    """A remote error's own message (the last line of Ray's traceback text)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
