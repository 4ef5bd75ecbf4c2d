"""The fixed catalog of turnwise metrics: one entry per Prometheus name.

Prometheus names are the contract (docs/monitoring.md has the table). Everything
else here -- where a value comes from in ``metrics.jsonl`` / ``evaluations.jsonl``,
the CloudWatch name and unit -- is derived from it, so the alert rules, the
dashboard, CloudWatch and the docs cannot drift apart silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["counter", "gauge", "histogram"]
Source = Literal["training", "evaluator", "serving"]

PREFIX = "turnwise_"
RUN_LABELS = ("run", "experiment")


@dataclass(frozen=True)
class Metric:
    name: str  # Prometheus name
    kind: Kind
    unit: str  # CloudWatch unit: Count, Seconds, Count/Second or None
    source: Source
    help: str
    labels: tuple[str, ...] = RUN_LABELS
    row_key: str | None = None  # its value in a metrics.jsonl / evaluations.jsonl row
    health: str = ""  # which of the six health metrics it is, if any

    @property
    def cloudwatch_name(self) -> str:
        """Without the prefix; counters without ``_total`` (CloudWatch gets increments)."""
        name = self.name.removeprefix(PREFIX)
        return name.removesuffix("_total") if self.kind == "counter" else name


_T, _E, _S = "training", "evaluator", "serving"
METRICS: tuple[Metric, ...] = (
    Metric("turnwise_env_steps_total", "counter", "Count", _T,
           "Env steps consumed by the learner", row_key="env_steps"),
    Metric("turnwise_env_steps_per_second", "gauge", "Count/Second", _T,
           "Env steps consumed per second", row_key="env_steps_per_second"),
    Metric("turnwise_train_return", "gauge", "None", _T,
           "Mean return of recent training episodes", row_key="train_return"),
    Metric("turnwise_episode_length_steps", "gauge", "Count", _T,
           "Mean length of recent training episodes", row_key="episode_length",
           health="episode length"),
    Metric("turnwise_action_entropy_nats", "gauge", "None", _T,
           "Policy entropy on training data", row_key="entropy", health="action entropy"),
    Metric("turnwise_reward_variance", "gauge", "None", _T,
           "Variance of recent training episode returns", health="reward variance"),
    Metric("turnwise_policy_lag_versions", "gauge", "Count", _T,
           "Policy versions between acting and learning", row_key="policy_lag"),
    Metric("turnwise_learner_loss", "gauge", "None", _T,
           "Learner losses", labels=(*RUN_LABELS, "kind")),
    Metric("turnwise_checkpoint_age_seconds", "gauge", "Seconds", _T,
           "Seconds since the last checkpoint"),
    Metric("turnwise_dropped_batches_total", "counter", "Count", _T,
           "Batches dropped for policy lag", row_key="dropped_batches"),
    Metric("turnwise_actor_failures_total", "counter", "Count", _T,
           "Rollout actor failures", row_key="actor_failures"),
    Metric("turnwise_eval_return", "gauge", "None", _E,
           "Mean return on the fixed evaluation episodes", row_key="eval_return"),
    Metric("turnwise_eval_fraction_of_baseline", "gauge", "None", _E,
           "Evaluation return as a fraction of the baseline's", row_key="fraction_of_baseline"),
    Metric("turnwise_eval_train_return_ratio", "gauge", "None", _E,
           "Evaluation return over training return", row_key="eval_train_ratio",
           health="eval-vs-train divergence"),
    Metric("turnwise_eval_action_entropy_nats", "gauge", "None", _E,
           "Policy entropy over evaluation states", row_key="action_entropy"),
    Metric("turnwise_state_coverage_ratio", "gauge", "None", _E,
           "Distinct states visited over reachable", row_key="state_coverage",
           health="state visitation"),
    Metric("turnwise_state_visitation_entropy", "gauge", "None", _E,
           "Normalized entropy of state visits (0..1)", row_key="visitation_entropy",
           health="state visitation"),
    Metric("turnwise_eval_success_ratio", "gauge", "None", _E,
           "Share of evaluation episodes that succeed", row_key="success_rate"),
    Metric("turnwise_eval_milestone_without_success_ratio", "gauge", "None", _E,
           "Share of evaluation episodes that stall after a milestone",
           row_key="milestone_without_success_rate"),
    Metric("turnwise_divergence_alerts_total", "counter", "Count", _E,
           "Eval/train divergence alerts raised by the evaluator"),
    Metric("turnwise_serve_inference_latency_seconds", "histogram", "Seconds", _S,
           "Model time of one batched forward pass", labels=(),
           health="inference latency"),
    Metric("turnwise_serve_request_latency_seconds", "histogram", "Seconds", _S,
           "Whole request time", labels=("route",)),
    Metric("turnwise_serve_requests_total", "counter", "Count", _S,
           "Requests answered", labels=("route", "status_class")),
    Metric("turnwise_serve_errors_total", "counter", "Count", _S,
           "Requests answered 4xx or 5xx", labels=("route", "status_class")),
    Metric("turnwise_serve_batch_size", "histogram", "Count", _S,
           "Observation rows per forward pass", labels=()),
    Metric("turnwise_serve_reloads_total", "counter", "Count", _S,
           "Policy loads by result (loaded, refused, failed)", labels=("result",)),
    Metric("turnwise_serve_policy_version", "gauge", "None", _S,
           "Policy version being served (-1: none)", labels=()),
)  # fmt: skip
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
LOSS_KINDS = {"policy": "policy_loss", "value": "value_loss", "total": "loss"}

Sample = tuple[str, dict[str, str], float]  # name, extra labels, value


def row_samples(row: Mapping[str, Any]) -> list[Sample]:
    """The catalog values in one metrics.jsonl or evaluations.jsonl row.

    A row with ``eval_return`` is an evaluation row and gives evaluator metrics only
    (its ``episode_length`` is not the training one). Counters of a training row are
    the run's totals so far; an evaluation row counts its own divergence alert (1 or
    0). Missing, null and non-finite values are left out.
    """
    source = "evaluator" if "eval_return" in row else "training"
    samples: list[Sample] = [
        (m.name, {}, row[m.row_key])
        for m in METRICS
        if m.source == source and m.row_key is not None and _number(row.get(m.row_key))
    ]
    if _number(row.get("train_return_std")):
        samples.append(("turnwise_reward_variance", {}, row["train_return_std"] ** 2))
    samples += [
        ("turnwise_learner_loss", {"kind": kind}, row[key])
        for kind, key in LOSS_KINDS.items()
        if _number(row.get(key))
    ]
    if isinstance(row.get("divergence_alert"), bool):
        samples.append(("turnwise_divergence_alerts_total", {}, float(row["divergence_alert"])))
    return [(name, labels, float(value)) for name, labels, value in samples]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip
_STRIP = (
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # string literals (label values)
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # range and subquery selectors
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
    re.compile(r"\$\{?\w+\}?"),  # dashboard variables
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a lexical scan, enough for
    our own rules and dashboards): identifiers that are not functions or keywords.

    >>> sorted(promql_metric_names('sum by (le) (rate(x_bucket{job="a"}[5m])) > 2 * y'))
    ['x_bucket', 'y']
    """
    for pattern in _STRIP:
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _IDENT.finditer(expr):
        word, rest = match.group(), expr[match.end() :].lstrip()
        if word.lower() in _PROMQL_WORDS or rest.startswith("("):  # a function call
            continue
        if expr[: match.start()].rstrip().endswith(tuple("0123456789.")):
            continue  # the unit of a number (1e3) or a duration like 5m outside brackets
        names.add(word)
    return names


def known_series(name: str) -> bool:
    """Whether ``name`` is a catalog metric or one of a catalog histogram's series."""
    if name in BY_NAME:
        return BY_NAME[name].kind != "histogram"
    for suffix in HISTOGRAM_SERIES:
        base = BY_NAME.get(name.removesuffix(suffix)) if name.endswith(suffix) else None
        if base is not None and base.kind == "histogram":
            return True
    return False
