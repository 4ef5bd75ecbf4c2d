"""Prometheus metrics of a training run: one registry, one HTTP endpoint, fixed names.

The names (documented in docs/monitoring.md) follow Prometheus conventions: one
``turnwise_`` prefix, base units, ``_total`` counters. Every series carries the
labels ``run`` and ``experiment`` only (plus ``kind`` for losses), so the number
of series never grows with states, episodes or time.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
)

log = logging.getLogger(__name__)

LABELS = ("run", "experiment")

# name -> (help, source key in a metrics.jsonl row)
TRAINING_GAUGES = {
    "turnwise_env_steps_per_second": (
        "Env steps consumed by the learner per second",
        "env_steps_per_second",
    ),
    "turnwise_train_return": ("Mean return of recent training episodes", "train_return"),
    "turnwise_episode_length_steps": ("Mean length of recent training episodes", "episode_length"),
    "turnwise_action_entropy_nats": ("Policy entropy on training data", "entropy"),
    "turnwise_policy_lag_versions": (
        "Mean policy versions between acting and learning",
        "policy_lag",
    ),
}
EVALUATION_GAUGES = {
    "turnwise_eval_return": ("Mean return on the fixed evaluation episodes", "eval_return"),
    "turnwise_eval_fraction_of_baseline": (
        "Evaluation return as a fraction of the baseline's",
        "fraction_of_baseline",
    ),
    "turnwise_eval_train_return_ratio": (
        "Evaluation return over training return",
        "eval_train_ratio",
    ),
    "turnwise_eval_action_entropy_nats": (
        "Policy entropy over evaluation states",
        "action_entropy",
    ),
    "turnwise_state_coverage_ratio": ("Distinct states visited over reachable", "state_coverage"),
    "turnwise_state_visitation_entropy": (
        "Normalized entropy of state visits",
        "visitation_entropy",
    ),
    "turnwise_eval_success_ratio": ("Share of evaluation episodes that succeed", "success_rate"),
    "turnwise_eval_milestone_without_success_ratio": (
        "Share of evaluation episodes that stall after a milestone",
        "milestone_without_success_rate",
    ),
}
LOSSES = {"policy": "policy_loss", "value": "value_loss", "total": "loss"}
COUNTERS = {
    "turnwise_env_steps_total": ("Env steps consumed by the learner", "env_steps"),
    "turnwise_dropped_batches_total": ("Batches dropped for policy lag", "dropped_batches"),
    "turnwise_actor_failures_total": ("Rollout actor failures", "actor_failures"),
}


class TrainingMetrics:
    """Sets the run's series from metrics and evaluation rows; serves them over HTTP."""

    def __init__(self, run: str, experiment: str) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"run": run, "experiment": experiment}
        disable_created_metrics()  # no *_created series: they only add noise here
        # Gauge series appear on their first value: an evaluation metric must not read 0
        # (and trip an alert) before the first evaluation.
        self._gauges = {
            name: Gauge(name, text, LABELS, registry=self.registry)
            for name, (text, _) in {**TRAINING_GAUGES, **EVALUATION_GAUGES}.items()
        }
        variance = Gauge(
            "turnwise_reward_variance",
            "Variance of recent training episode returns",
            LABELS,
            registry=self.registry,
        )
        self._variance = variance
        loss = Gauge(
            "turnwise_learner_loss", "Learner losses", (*LABELS, "kind"), registry=self.registry
        )
        self._loss = loss
        self._age = Gauge(
            "turnwise_checkpoint_age_seconds",
            "Seconds since the last checkpoint",
            LABELS,
            registry=self.registry,
        )
        self._checkpoint_time: float | None = None
        self._counters = {
            name: Counter(name.removesuffix("_total"), text, LABELS, registry=self.registry).labels(
                **self.labels
            )
            for name, (text, _) in COUNTERS.items()
        }
        self._counted = dict.fromkeys(COUNTERS, 0.0)
        alerts = Counter(
            "turnwise_divergence_alerts",
            "Eval/train divergence alerts",
            LABELS,
            registry=self.registry,
        )
        self._alerts = alerts.labels(**self.labels)
        self.port: int | None = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the HTTP endpoint; port 0 picks a free one. Returns the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self.port = server.server_address[1]
        log.info("Prometheus metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def close(self) -> None:
        if self.port is not None:
            self._server.shutdown()
            self._server.server_close()
            self.port = None

    def observe_update(self, row: dict[str, Any]) -> None:
        """Set the training series from one metrics.jsonl row."""
        for name, (_, key) in TRAINING_GAUGES.items():
            self._set(self._gauges[name], row.get(key))
        std = row.get("train_return_std")
        self._set(self._variance, None if std is None else std**2)
        for kind, key in LOSSES.items():
            self._set(self._loss, row.get(key), kind=kind)
        for name, (_, key) in COUNTERS.items():  # counters follow the run's own totals
            total = float(row.get(key, 0))
            if total > self._counted[name]:
                self._counters[name].inc(total - self._counted[name])
                self._counted[name] = total

    def observe_evaluation(self, row: dict[str, Any]) -> None:
        for name, (_, key) in EVALUATION_GAUGES.items():
            self._set(self._gauges[name], row.get(key))
        if row.get("divergence_alert"):
            self._alerts.inc()

    def observe_checkpoint(self) -> None:
        if self._checkpoint_time is None:
            self._age.labels(**self.labels).set_function(self._checkpoint_age)
        self._checkpoint_time = time.time()

    def _checkpoint_age(self) -> float:
        return time.time() - (self._checkpoint_time or time.time())

    def _set(self, gauge: Gauge, value: Any, **extra: str) -> None:
        if value is not None and isinstance(value, int | float) and math.isfinite(value):
            gauge.labels(**self.labels, **extra).set(value)
