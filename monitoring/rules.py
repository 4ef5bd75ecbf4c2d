"""Prometheus alert rules for turnwise, rendered from one definition with thresholds.

``monitoring/alerts.yml`` is this module's output with the default thresholds (a test
keeps them equal); ``--format prometheusrule`` wraps the same groups in a Kubernetes
``PrometheusRule`` for the Prometheus Operator::

    python -m monitoring.rules --entropy-floor 0.05 --out alerts.yml
    python -m monitoring.rules --format prometheusrule --out turnwise-rules.yaml
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

GROUP = "turnwise"
RULES_FILE = Path(__file__).resolve().parent / "alerts.yml"
Format = Literal["rules", "prometheusrule"]


@dataclass(frozen=True)
class Thresholds:
    divergence_ratio: float = 0.8  # eval return / train return below this alerts
    entropy_floor: float = 0.02  # nats; training policy entropy below this for 15m
    variance_factor: float = 4.0  # reward variance above this x its recent average
    latency_p99_seconds: float = 0.05  # p99 of the serving model time

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"{f.name} must be positive, got {getattr(self, f.name)}")
        if self.variance_factor <= 1:
            raise ValueError(f"variance_factor must exceed 1, got {self.variance_factor}")


HELP = {
    "divergence_ratio": "alert when eval return / train return falls below this",
    "entropy_floor": "alert when training policy entropy stays below this many nats for 15m",
    "variance_factor": "alert when reward variance exceeds this multiple of its recent average",
    "latency_p99_seconds": "alert when serving p99 inference latency exceeds this",
}


def _rule(
    alert: str, expr: str, for_: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


RUN = "run {{ $labels.run }} ({{ $labels.experiment }})"
VALUE = '{{ $value | printf "%.3g" }}'


def rules(t: Thresholds) -> list[dict[str, Any]]:
    """The alert rules of group ``turnwise`` for thresholds ``t``."""
    return [
        _rule(
            "EvalTrainReturnDivergence",
            f"turnwise_eval_train_return_ratio < {t.divergence_ratio:g}",
            "",
            "warning",
            f"Evaluation return below {t.divergence_ratio:.0%} of training return",
            f"{RUN}: evaluation return is {{{{ $value | humanizePercentage }}}} of training "
            "return on the fixed evaluation episodes; the policy may exploit the training "
            "env or overfit its seeds.",
        ),
        _rule(
            "ActionEntropyCollapse",
            f"turnwise_action_entropy_nats < {t.entropy_floor:g}",
            "15m",
            "warning",
            f"Policy entropy below {t.entropy_floor:g} nats for 15 minutes",
            f"{RUN}: policy entropy on training data is {VALUE} nats; "
            "the policy has become near-deterministic and stopped exploring.",
        ),
        _rule(
            "RewardVarianceSpike",
            f"turnwise_reward_variance\n  > {t.variance_factor:g} * "
            "avg_over_time(turnwise_reward_variance[30m] offset 10m)",
            "5m",
            "warning",
            f"Reward variance above {t.variance_factor:g}x its recent average",
            f"{RUN}: variance of training episode returns is {VALUE}, "
            f"more than {t.variance_factor:g} times its average over the 30 minutes that "
            "ended 10 minutes ago.",
        ),
        _rule(
            "TrainingStalled",
            "rate(turnwise_env_steps_total[5m]) == 0",
            "5m",
            "critical",
            "Training consumes no env steps",
            f"{RUN}: env steps/s over the last 5 minutes is {{{{ $value }}}}, and has been "
            "for 5 minutes (rollout actors stuck, or the learner blocked).",
        ),
        _rule(
            "InferenceLatencyP99High",
            f"histogram_quantile(0.99,\n  sum by (le, job) "
            f"(rate(turnwise_serve_inference_latency_seconds_bucket[5m]))\n) "
            f"> {t.latency_p99_seconds:g}",
            "5m",
            "warning",
            f"Serving p99 inference latency above {t.latency_p99_seconds * 1000:g} ms",
            "{{ $labels.job }}: p99 model time per forward pass is "
            "{{ $value | humanizeDuration }} over the last 5 minutes.",
        ),
    ]


def groups(t: Thresholds) -> dict[str, Any]:
    return {"groups": [{"name": GROUP, "rules": rules(t)}]}


def prometheus_rule(t: Thresholds, name: str = "turnwise-alerts") -> dict[str, Any]:
    """The same groups as a ``monitoring.coreos.com/v1`` PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "turnwise", "role": "alert-rules"},
        },
        "spec": groups(t),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (long expressions) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(t: Thresholds | None = None, fmt: Format = "rules") -> str:
    t = t or Thresholds()
    document = groups(t) if fmt == "rules" else prometheus_rule(t)
    settings = ", ".join(f"{k}={v:g}" for k, v in asdict(t).items())
    header = (
        "# Generated by `python -m monitoring.rules` -- edit monitoring/rules.py, not this.\n"
        f"# Thresholds: {settings}\n"
    )
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)
    return header + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.rules",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default = Thresholds()
    for f in fields(Thresholds):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(
            flag,
            type=float,
            default=getattr(default, f.name),
            dest=f.name,
            help=f"{HELP[f.name]} (default %(default)g)",
        )
    parser.add_argument("--format", choices=["rules", "prometheusrule"], default="rules")
    parser.add_argument("--out", type=Path, help="write here instead of to stdout")
    args = parser.parse_args(argv)
    try:
        t = Thresholds(**{f.name: getattr(args, f.name) for f in fields(Thresholds)})
    except ValueError as error:
        parser.error(str(error))
    text = render(t, args.format)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
