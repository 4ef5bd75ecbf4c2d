"""Learning benchmark: the default experiments as a user runs them, side by side.

``python -m benchmarks.learning [--quick] [--repeats N]`` runs, in one process, one
after another: ``+exp=warehouse`` with the evaluator on and with it off, with a
legal-action mask and with a Dict observation, alternating,
``--repeats`` times each (the throughput cost of the external evaluation is a ratio of
medians: single runs on a 2-core machine vary by +-15%), and ``+exp=cartpole``.
It reports wall-clock and env steps until the evaluation return reaches 90% of the
oracle's on the held-out seeds, the final fraction of the oracle, CartPole's steps to
a mean training return of 450, writes ``benchmarks/results/learning.json`` and the
``learning`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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

log = logging.getLogger("benchmarks.learning")

RUNS = {  # name -> overrides; quick mode shortens the budgets
    "warehouse": ["+exp=warehouse"],
    "warehouse, evaluator off": ["+exp=warehouse", "evaluator.enabled=false"],
    "warehouse, action mask": ["+exp=warehouse", "env.kwargs={action_mask: true}"],
    "warehouse, Dict observation": ["+exp=warehouse", "env.kwargs={observation: dict}"],
    "cartpole": ["+exp=cartpole"],
}
QUICK = {"warehouse": 300_000, "cartpole": 100_000}


def run_one(
    name: str, overrides: list[str], quick: bool, root: Path, repeat: int = 0
) -> dict[str, Any]:
    budget = next((v for k, v in QUICK.items() if name.startswith(k)), None)
    extra = [f"train.env_steps={budget}"] if quick and budget else []
    config = compose_config([*overrides, *extra, "train.progress=false"])
    run_dir = root / f"{name.replace(', ', '-').replace(' ', '-')}-{repeat}"
    log.info("running %s #%d (%s env steps)", name, repeat, f"{config.train.env_steps:,}")
    result = train(config, run_dir)
    return {**summarize(name, run_dir, result.counters.env_steps), "repeat": repeat}


def schedule(names: Sequence[str], repeats: int) -> list[tuple[str, int]]:
    """The runs in order: the warehouse runs alternate, ``repeats`` times each, so drift
    on the machine falls on both alike; the others run once."""
    paired = [n for n in names if n.startswith("warehouse")]
    order = [(n, k) for k in range(repeats) for n in paired]
    return order + [(n, 0) for n in names if n not in paired]


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run name: the run with the median throughput, with the spread of all."""
    out = {}
    for name in dict.fromkeys(r["run"] for r in runs):
        rows = sorted(
            (r for r in runs if r["run"] == name), key=lambda r: r["env_steps_per_second"]
        )
        rates = [r["env_steps_per_second"] for r in rows]
        out[name] = {
            **rows[(len(rows) - 1) // 2],
            "median_rate": statistics.median(rates),
            "rates": rates,
        }
    return out


def summarize(name: str, run_dir: Path, env_steps: int) -> dict[str, Any]:
    metrics = read_metrics(run_dir / "metrics.jsonl")
    evaluations = EvaluationTable(run_dir).rows()
    row: dict[str, Any] = {
        "run": name,
        "env_steps": env_steps,
        "seconds": metrics[-1]["time_s"],
        "env_steps_per_second": metrics[-1]["env_steps_per_second"],
        "final_train_return": metrics[-1]["train_return"],
    }
    solved = next((e for e in evaluations if (e.get("fraction_of_baseline") or 0) >= 0.9), None)
    if evaluations:
        row["final_fraction_of_baseline"] = evaluations[-1].get("fraction_of_baseline")
        row["final_eval_return"] = evaluations[-1]["eval_return"]
    if solved:
        row["steps_to_90pct_oracle"] = solved["env_steps"]
        row["seconds_to_90pct_oracle"] = time_at(metrics, solved["env_steps"])
    reached = next((m for m in metrics if m["train_return"] >= 450), None)
    if name.startswith("cartpole") and reached:
        row["steps_to_return_450"] = reached["env_steps"]
        row["seconds_to_return_450"] = reached["time_s"]
    return row


def time_at(metrics: list[dict[str, Any]], env_steps: int) -> float:
    return next(m["time_s"] for m in metrics if m["env_steps"] >= env_steps)


def render(report: dict[str, Any]) -> str:
    rows = medians(report["runs"])
    on, off = rows.get("warehouse"), rows.get("warehouse, evaluator off")
    lines = [
        "<!-- learning:begin -->",
        "## Learning: the default experiments",
        "",
        "Produced by:",
        "",
        f"```\n{report['command']}\n```",
        "",
        f"- Machine: {report['machine']['cpu_model']}, {report['machine']['cpu_count']} CPUs, "
        f"no GPU; torch {report['machine']['torch']}, Ray {report['machine']['ray']}",
        f"- Date: {report['date']} ({report['mode']} mode)",
        "",
        "| run | runs | env steps | wall-clock s | env steps/s (median; range) "
        "| 90% of oracle (eval) at | final eval / oracle | CartPole return 450 at |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows.values():
        solved = (
            f"{r['steps_to_90pct_oracle']:,} steps, {r['seconds_to_90pct_oracle']:.0f} s"
            if "steps_to_90pct_oracle" in r
            else "-"
        )
        fraction = r.get("final_fraction_of_baseline")
        cart = (
            f"{r['steps_to_return_450']:,} steps, {r['seconds_to_return_450']:.0f} s"
            if "steps_to_return_450" in r
            else ("not reached" if r["run"].startswith("cartpole") else "-")
        )
        rates = r["rates"]
        spread = f"; {min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else ""
        lines.append(
            f"| {r['run']} | {len(rates)} | {r['env_steps']:,} | {r['seconds']:.0f} | "
            f"{r['median_rate']:,.0f}{spread} | {solved} | "
            f"{'-' if fraction is None else f'{fraction:.3f}'} | {cart} |"
        )
    if on and off:
        ratio = on["median_rate"] / off["median_rate"]
        lines += [
            "",
            f"Learner throughput with the evaluator on is {ratio:.0%} of that with it off "
            f"(median of {len(on['rates'])} alternating runs each; the acceptance bound "
            "is 90%). The other columns are those of the median run.",
        ]
    masked = rows.get("warehouse, action mask")
    if on and masked:
        lines += ["", masked_sentence(masked, on)]
    lines += [
        "",
        "Evaluation: greedy policy on the 32 fixed held-out seeds of `evaluator.seed`, "
        "against the oracle's return on the same episodes; evaluations at every "
        "`evaluator.every_env_steps`, so the time to 90% is resolved to that interval.",
        "<!-- learning:end -->",
    ]
    return "\n".join(lines)


def masked_sentence(masked: dict[str, Any], unmasked: dict[str, Any]) -> str:
    """Masked against unmasked Warehouse: time to 90% of the oracle, median runs."""

    def reached(row: dict[str, Any]) -> str:
        if "steps_to_90pct_oracle" not in row:
            return "not within the budget"
        steps, seconds = row["steps_to_90pct_oracle"], row["seconds_to_90pct_oracle"]
        return f"at {steps:,} env steps ({seconds:.0f} s)"

    return (
        f"With the legal-action mask (`env.kwargs={{action_mask: true}}`) the policy reaches 90% "
        f"of the oracle {reached(masked)}; without it {reached(unmasked)} (median runs)."
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning")
    parser.add_argument("--quick", action="store_true", help="short budgets (a few minutes)")
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="a subset of runs")
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="warehouse on/off runs each (5; quick: 1)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "learning.json")
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args(argv)
    names = args.only or list(RUNS)
    repeats = args.repeats or (1 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="turnwise-learning-") as root:
        runs = [
            run_one(name, RUNS[name], args.quick, Path(root), k)
            for name, k in schedule(names, repeats)
        ]
    if args.only and args.out.exists():  # keep the other runs of the last report
        kept = [r for r in json.loads(args.out.read_text())["runs"] if r["run"] not in names]
        runs = sorted(kept + runs, key=lambda r: (list(RUNS).index(r["run"]), r.get("repeat", 0)))
    report = {
        "benchmark": "learning",
        "command": shlex.join(["python", "-m", "benchmarks.learning", *argv]),
        "mode": "quick" if args.quick else "full",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(
            torch=torch.__version__, ray=ray.__version__, gymnasium=gymnasium.__version__
        ),
        "runs": runs,
    }
    publish(report, render(report), "learning", args.out, args.markdown)
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
