"""The evaluator as a Ray actor beside training: asked, never waited for."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from actors.envs import stop_launched_servers
from actors.health import ActorFailing, ActorHealth
from evaluator.evaluator import Evaluator
from turnwise.config import Config, evaluation_env
from turnwise.run_store import node_record

log = logging.getLogger(__name__)


def evaluator_actor_name(run_dir: Path) -> str:
    return f"turnwise-evaluator@{Path(run_dir).resolve()}"


class EvaluatorActor(Evaluator):
    """The evaluator in its own process: background work that yields the CPU to
    training (``evaluator.niceness``) and runs torch on one thread. A launch-mode
    simulator server runs only while it evaluates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        torch.set_num_threads(1)
        if self.config.niceness > 0:
            os.nice(self.config.niceness)

    def describe(self) -> dict[str, Any]:
        """Where the evaluator runs (Ray node id, host, pid)."""
        return node_record()

    def ready(self) -> list[str]:
        """Started, with the baseline computed (so a first evaluation is quick); the
        checkpoints the table already holds."""
        try:
            self.baseline_return()
        finally:
            stop_launched_servers()
        return sorted(self.table.evaluated())

    def catch_up(self, reported: list[str]) -> list[dict[str, Any]]:
        """Evaluate what is pending; return the table's rows of checkpoints not in
        ``reported``: this call's, and those of a call a crash cut short."""
        try:
            self.evaluate_pending()
        finally:
            stop_launched_servers()
        known = set(reported)
        return [row for row in self.table.rows() if row.get("checkpoint") not in known]


class RemoteEvaluator:
    """Keeps at most one evaluation call in flight; a request made while one runs is
    remembered, and a crashed (restarted) evaluator is asked again. A crash counts as
    one failure however many calls fail while Ray restarts it; an evaluator Ray will
    not restart is given up (training goes on)."""

    def __init__(
        self, config: Config, run_dir: Path, store_uri: str, records_uri: str | None = None
    ) -> None:
        """``store_uri``: the checkpoints; ``records_uri``: the run store its tables go
        to (default: ``run_dir``)."""
        cfg = config.evaluator
        self.actor = (
            ray.remote(EvaluatorActor)
            .options(
                name=evaluator_actor_name(run_dir),
                num_cpus=cfg.num_cpus,
                resources=dict(cfg.resources) or None,
                max_restarts=cfg.max_restarts,
            )
            .remote(store_uri, evaluation_env(cfg, config.env), cfg, records_uri or str(run_dir))
        )
        self.ready: ray.ObjectRef = self.actor.ready.remote()
        self.pending: ray.ObjectRef | None = None
        self._submitted = 0.0
        self.again = False
        self.failures = 0
        self.gone = False
        self.health = ActorHealth("evaluator")
        self.evaluated: set[str] = set()  # checkpoints the table holds, as far as known here
        self.results: list[dict[str, Any]] = []  # rows collected by this driver

    def start(self) -> None:
        """Once ``ready`` has resolved: the checkpoints evaluated before this run."""
        self.evaluated |= set(ray.get(self.ready))

    def request(self) -> None:
        if self.gone:
            return
        if self.pending is None:
            self.pending = self.actor.catch_up.remote(sorted(self.evaluated))
            self._submitted = time.monotonic()
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
            rows = self._collect(ray.get(ready[0]))
            self.health.succeeded()
        except RayActorError as error:
            self._crashed(error)
        except RayTaskError as error:  # the call raised; the next request tries again
            self.failures += 1
            log.warning("evaluation failed: %s", _last_line(error))
        if self.again:
            self.again = False
            self.request()
        return rows

    def drain(self, timeout: float) -> list[dict[str, Any]]:
        """At the end of a run: let queued evaluations finish, within ``timeout`` s."""
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while self.pending is not None and time.monotonic() < deadline:
            rows += self.poll(max(deadline - time.monotonic(), 0.0))
        return rows

    def _collect(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of checkpoints not collected before, one per checkpoint."""
        new = []
        for row in rows:
            if row["checkpoint"] not in self.evaluated:
                self.evaluated.add(row["checkpoint"])
                new.append(row)
        self.results += new
        return new

    def _crashed(self, error: RayActorError) -> None:
        try:
            if self.health.failed(error, self._submitted):
                self.failures += 1
                log.warning("evaluator failed (%s); Ray restarts it", _last_line(error))
        except ActorFailing as failing:
            self.gone = True
            log.error("%s; no more evaluations in this run", failing)
            return
        self.again = True


def _last_line(error: Exception) -> str:
    """A remote error's own message (the last line of Ray's traceback text)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
