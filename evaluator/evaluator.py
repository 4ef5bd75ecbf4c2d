"""The external evaluator: fixed env, fixed seeds, a baseline, divergence alerts.

A plain class (tests run it in-process); the training driver wraps it with
``ray.remote`` so it runs as its own actor, possibly on another node. It reads
checkpoints from the checkpoint store only, never from the learner.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from evaluator.baselines import resolve_baseline
from evaluator.episodes import evaluation_seeds, policy_actor, run_episodes
from evaluator.metrics import divergence, summarize
from sims.declarations import Declarations, declarations
from turnwise.checkpoint import CheckpointError, load_checkpoint, read_manifest, resolve
from turnwise.checkpoint_store import open_store
from turnwise.config import EnvConfig, EvaluatorConfig
from turnwise.policy import policy_from_checkpoint
from turnwise.run_store import RecordFile, RunStore

log = logging.getLogger(__name__)


class EvaluationTable:
    """evaluations.jsonl in the run store (a run directory or ``s3://``): one row per
    evaluated checkpoint (apart from training metrics); alerts also go to alerts.jsonl.
    On S3 each row is uploaded at once (``turnwise.run_store.RecordFile``)."""

    def __init__(self, run_dir: str | Path | None) -> None:
        store = RunStore(run_dir) if run_dir else None
        self.table = RecordFile(store, "evaluations.jsonl") if store else None
        self.alert_log = RecordFile(store, "alerts.jsonl") if store else None
        self.path = Path(self.table.uri) if store is not None and store.local else None
        self.alerts = Path(self.alert_log.uri) if store is not None and store.local else None

    def rows(self) -> list[dict[str, Any]]:
        return [] if self.table is None else self.table.rows()

    def evaluated(self) -> set[str]:
        """Names of the checkpoints the table holds a row for."""
        return {row["checkpoint"] for row in self.rows() if "checkpoint" in row}

    def append(self, row: dict[str, Any], alert: bool = False) -> None:
        """One row (of the alerts where ``alert``); after a line torn by a crash it starts
        a new line (never glued on)."""
        record = self.alert_log if alert else self.table
        if record is not None:
            record.append(row)


class Evaluator:
    """Role: ``evaluate(checkpoint) -> dict`` and ``evaluate_pending() -> list[dict]``."""

    def __init__(
        self,
        store_uri: str,
        env: EnvConfig,
        config: EvaluatorConfig,
        run_dir: str | None = None,
    ) -> None:
        self.store = open_store(store_uri)
        self.env = env
        self.config = config
        self.seeds = evaluation_seeds(config.seed, config.episodes)
        self.table = EvaluationTable(run_dir)
        self.unreadable: set[str] = set()  # corrupt checkpoints, skipped (logged once)
        self.declared = _probe(env)
        self.baseline = resolve_baseline(config.baseline, self.declared)
        self._baseline_return: float | None = None
        self._baseline_error: str | None = None
        self._seen_states: set = set()
        if self.baseline.kind == "none":
            log.info(
                "no baseline for %s: evaluations report returns, entropy and coverage without "
                "a fraction of a baseline (evaluator.baseline sets one)",
                env.id,
            )

    def baseline_return(self) -> float | None:
        """The baseline's mean return on the evaluation episodes, computed once it
        succeeds; a baseline that raises is retried at the next evaluation and its
        error reported in the row (``baseline_error``)."""
        if self._baseline_return is None and self.baseline.kind != "none":
            try:
                self._baseline_return = self.baseline.mean_return(self.env, self.seeds)
                self._baseline_error = None
            except Exception as error:  # a user's baseline policy may raise anything
                self._baseline_error = f"{type(error).__name__}: {error}"
                log.warning("baseline %s failed: %s", self.baseline.name, self._baseline_error)
        return self._baseline_return

    def evaluate(self, name: str | None = None, record: bool = True) -> dict[str, Any]:
        """Evaluate one checkpoint (default: latest); ``record``: append the row (and any
        alert) to the run's tables and promote ``best``."""
        checkpoint = load_checkpoint(self.store, name)
        model = policy_from_checkpoint(checkpoint)  # normalizer frozen: eval never updates it
        started = time.monotonic()
        episodes = run_episodes(self.env, self.seeds, policy_actor(model, greedy=True))
        baseline_return = self.baseline_return()
        row = {
            "checkpoint": checkpoint.name,
            "env_steps": checkpoint.manifest["env_steps"],
            "policy_version": checkpoint.manifest["policy_version"],
            "env_version": checkpoint.manifest["env_version"],
            "seeds": [self.seeds[0], self.seeds[-1]],
            "baseline": self.baseline.name,
            "baseline_error": self._baseline_error,
            **summarize(episodes, model, baseline_return, self.declared, self._seen_states),
            "train_return": checkpoint.manifest.get("train_return"),
        }
        self._seen_states |= {(e.seed, k) for e in episodes for k in e.visits}
        row["eval_train_ratio"] = divergence(
            row["eval_return"],
            row["train_return"],
            row["env_steps"],
            baseline_return,
            self.config.divergence_warmup_env_steps,
        )
        row["divergence_alert"] = bool(
            row["eval_train_ratio"] is not None
            and row["eval_train_ratio"] < self.config.divergence_threshold
        )
        row["seconds"] = time.monotonic() - started
        row["evaluated_at"] = time.time()  # minus the checkpoint's "created": the lag
        row["checkpoint_created"] = checkpoint.manifest.get("created")
        if record:
            self._record(row)
        return row

    def evaluate_pending(self) -> list[dict[str, Any]]:
        """Evaluate, oldest first, every checkpoint marked for evaluation that the
        table does not hold yet (so a restarted evaluator resumes where it stopped)."""
        done = self.table.evaluated()
        results = []
        for name in self.store.list():
            if name in done or name in self.unreadable:
                continue
            try:  # listed a moment ago, it may be gone by now (retention, an operator)
                if self._marked(name):
                    results.append(self.evaluate(name))
            except FileNotFoundError as error:
                log.warning("skipping checkpoint %s, gone before its evaluation: %s", name, error)
            except CheckpointError as error:  # corrupt: skipped once, newer ones go on
                self.unreadable.add(name)
                log.error("skipping checkpoint %s, which cannot be loaded: %s", name, error)
        return results

    def _marked(self, name: str) -> bool:
        return bool(read_manifest(self.store, name).get("evaluate"))

    def _record(self, row: dict[str, Any]) -> None:
        self.table.append(row)
        if row["divergence_alert"]:
            log.warning(
                "ALERT eval/train divergence %.2f < %.2f at %s env steps (%s): eval return "
                "%.2f, train return %.2f",
                row["eval_train_ratio"],
                self.config.divergence_threshold,
                f"{row['env_steps']:,}",
                row["checkpoint"],
                row["eval_return"],
                row["train_return"],
            )
            alert = {
                "alert": "EvalTrainDivergence",
                "time": time.time(),
                **{k: row[k] for k in ("checkpoint", "env_steps", "eval_train_ratio")},
            }
            self.table.append(alert, alert=True)
        self._promote(row)

    def _promote(self, row: dict[str, Any]) -> None:
        best_name = resolve(self.store, "best")
        best = [r for r in self.table.rows() if r.get("checkpoint") == best_name]
        if best_name is None or not best or row["eval_return"] > best[-1]["eval_return"]:
            self.store.set_pointer("best", row["checkpoint"])
            log.info(
                "best checkpoint is now %s (eval return %.3f)",
                row["checkpoint"],
                row["eval_return"],
            )


def _probe(env: EnvConfig) -> Declarations:
    from actors.envs import make_env

    probe = make_env(env)
    try:
        return declarations(probe)
    finally:
        probe.close()
