"""Drift benchmark: observation normalizers on Inventory-v0, whose demand drifts.

``python -m benchmarks.drift [--repeats N] [--env-steps N]`` trains ``+exp=inventory``
with three observation normalizers, alternating (window, cumulative, none, window, ...)
so that load on the machine falls on all alike:

- ``window``: the default ``learner.normalizer.kind=window``, statistics over about the
  last ``window_env_steps`` (200,000) observations;
- ``cumulative``: the same normalizer with an effectively infinite window
  (``learner.normalizer.window_env_steps=10**15``): the exact running mean and variance
  of every observation since the start (turnwise has no separate cumulative kind);
- ``none``: ``learner.normalizer.kind=none``, raw observations (already in [0, 1]).

It reports, per normalizer, the evaluation return on the held-out drift regimes at the
end, the fraction of the heuristic baseline, and the env steps and wall-clock seconds
until an evaluation first reached 90% of the baseline; writes
``benchmarks/results/drift.json`` and the ``drift`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import ray
import torch

from benchmarks.alternating import positive_int
from benchmarks.report import BENCHMARKS_MD, RESULTS_DIR, machine_info, publish
from evaluator.evaluator import EvaluationTable
from learner.driver import train
from learner.progress import read_metrics
from turnwise.config import compose_config

log = logging.getLogger("benchmarks.drift")

CUMULATIVE_WINDOW = 10**15  # env steps: more than any run sees, so no observation is forgotten
NORMALIZERS = {  # name -> overrides of +exp=inventory
    "window": [],
    "cumulative": [f"learner.normalizer.window_env_steps={CUMULATIVE_WINDOW}"],
    "none": ["learner.normalizer.kind=none"],
}
TARGET = 0.9  # fraction of the baseline whose first crossing is timed


def schedule(names: Sequence[str], repeats: int) -> list[tuple[str, int]]:
    """Every normalizer once per round, ``repeats`` rounds: drift on the machine (other
    work, thermal) falls on all of them alike."""
    return [(name, k) for k in range(repeats) for name in names]


def run_one(name: str, env_steps: int, every: int, root: Path, repeat: int) -> dict[str, Any]:
    overrides = ["+exp=inventory", *NORMALIZERS[name], "train.progress=false"]
    overrides += [f"train.env_steps={env_steps}", f"evaluator.every_env_steps={every}"]
    overrides += [f"checkpoint.every_env_steps={every}"]
    run_dir = root / f"{name}-{repeat}"
    log.info("running %s #%d (%s env steps)", name, repeat, f"{env_steps:,}")
    result = train(compose_config(overrides), run_dir)
    return {**summarize(run_dir, result.counters.env_steps), "run": name, "repeat": repeat}


def summarize(run_dir: Path, env_steps: int) -> dict[str, Any]:
    """One run's figures from its metrics and evaluation logs."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    evaluations = EvaluationTable(run_dir).rows()
    final = evaluations[-1]
    row: dict[str, Any] = {
        "env_steps": env_steps,
        "seconds": metrics[-1]["time_s"],
        "env_steps_per_second": metrics[-1]["env_steps_per_second"],
        "baseline": final["baseline"],
        "baseline_return": final["baseline_return"],
        "final_eval_return": final["eval_return"],
        "final_fraction_of_baseline": final["fraction_of_baseline"],
        "fractions": [e["fraction_of_baseline"] for e in evaluations],
        "evaluated_at": [e["env_steps"] for e in evaluations],
    }
    reached = next((e for e in evaluations if (e["fraction_of_baseline"] or 0) >= TARGET), None)
    if reached:
        row["steps_to_target"] = reached["env_steps"]
        row["seconds_to_target"] = next(
            m["time_s"] for m in metrics if m["env_steps"] >= reached["env_steps"]
        )
    return row


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per normalizer: medians over its runs, and the spread of the final fraction."""
    out = {}
    for name in dict.fromkeys(r["run"] for r in runs):
        rows = [r for r in runs if r["run"] == name]
        fractions = [r["final_fraction_of_baseline"] for r in rows]
        reached = [r for r in rows if "steps_to_target" in r]
        out[name] = {
            "runs": len(rows),
            "final_eval_return": statistics.median(r["final_eval_return"] for r in rows),
            "final_fraction": statistics.median(fractions),
            "fractions": fractions,
            "reached": len(reached),
            "steps_to_target": _median_or_none([r["steps_to_target"] for r in reached]),
            "seconds_to_target": _median_or_none([r["seconds_to_target"] for r in reached]),
            "rate": statistics.median(r["env_steps_per_second"] for r in rows),
            "baseline_return": rows[0]["baseline_return"],
        }
    return out


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def render(report: dict[str, Any]) -> str:
    rows = medians(report["runs"])
    machine = report["machine"]
    lines = [
        "<!-- drift:begin -->",
        "## Drift: observation normalizers on Inventory-v0",
        "",
        "Produced by:",
        "",
        f"```\n{report['command']}\n```",
        "",
        f"- Machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs, no GPU; torch "
        f"{machine['torch']}, Ray {machine['ray']}; load average at the start "
        f"{report['load_average_start']}",
        f"- Date: {report['date']}; {report['env_steps']:,} env steps a run, evaluated every "
        f"{report['every']:,}",
        "",
        "| normalizer | runs | final eval return (median) | final fraction of the heuristic "
        "(median; all runs) | 90% of the heuristic reached | first at (median) | env steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        first = (
            f"{r['steps_to_target']:,.0f} steps, {r['seconds_to_target']:.0f} s"
            if r["steps_to_target"] is not None
            else "-"
        )
        spread = ", ".join(f"{f:.3f}" for f in r["fractions"])
        lines.append(
            f"| {name} | {r['runs']} | {r['final_eval_return']:.2f} | "
            f"{r['final_fraction']:.3f} ({spread}) | {r['reached']} of {r['runs']} | {first} | "
            f"{r['rate']:,.0f} |"
        )
    lines += ["", verdict(rows), "", *NOTES, "<!-- drift:end -->"]
    return "\n".join(lines)


NOTES = [
    "Training: `+exp=inventory` (the `train` regime: levels wander from [2, 4] across [1, 7], "
    "so the population of observations spreads over the run). Evaluation: the greedy policy "
    "on the 32 fixed seeds in the held-out `heldout` regime (a declining market, 2.5x the "
    "volatility, short strong seasons), against the (s, S) heuristic "
    "`sims.inventory.baselines:heuristic` on the same episodes; returns are costs, so the "
    "fraction is `2 - eval / baseline` (docs/evaluation.md): 0.9 is 1.1x the heuristic's "
    "cost. `cumulative` is the window normalizer with "
    "`learner.normalizer.window_env_steps=10**15`: the exact running statistics of every "
    "observation. Time to 90% is resolved to the evaluation interval.",
]


def verdict(rows: dict[str, dict[str, Any]]) -> str:
    """One sentence on the brief's claim: does the window normalizer beat a cumulative one?"""
    window, cumulative = rows.get("window"), rows.get("cumulative")
    if not window or not cumulative:
        return ""
    gap = window["final_fraction"] - cumulative["final_fraction"]
    if abs(gap) < 0.02:
        outcome = "about the same final fraction as"
    elif gap > 0:
        outcome = f"a final fraction {gap:.3f} higher than"
    else:
        outcome = f"a final fraction {-gap:.3f} lower than"
    sentence = (
        f"Under this drift the window normalizer reaches {outcome} the cumulative one "
        f"(medians of {window['runs']} and {cumulative['runs']} runs)"
    )
    steps = window["steps_to_target"], cumulative["steps_to_target"]
    if None not in steps:
        sentence += (
            f", and 90% of the heuristic at {steps[0]:,.0f} against {steps[1]:,.0f} env steps"
        )
    return sentence + "."


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift")
    parser.add_argument("--repeats", type=positive_int, default=2, help="runs per normalizer")
    parser.add_argument("--env-steps", type=positive_int, default=300_000, help="per run")
    parser.add_argument("--every", type=positive_int, default=50_000, help="evaluation interval")
    parser.add_argument("--only", nargs="*", choices=sorted(NORMALIZERS), help="a subset")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "drift.json")
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args(argv)
    names = args.only or list(NORMALIZERS)
    machine = machine_info(
        torch=torch.__version__, ray=ray.__version__, gymnasium=gymnasium.__version__
    )
    with tempfile.TemporaryDirectory(prefix="turnwise-drift-") as root:
        runs = [
            run_one(name, args.env_steps, args.every, Path(root), k)
            for name, k in schedule(names, args.repeats)
        ]
    report = {
        "benchmark": "drift",
        "command": shlex.join(["python", "-m", "benchmarks.drift", *argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load_average_start": machine["load_average"],
        "env_steps": args.env_steps,
        "every": args.every,
        "runs": runs,
        "summary": medians(runs),
    }
    publish(report, render(report), "drift", args.out, args.markdown)
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
