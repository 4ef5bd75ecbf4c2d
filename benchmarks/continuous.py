"""Continuous control side by side: Pendulum-v1 with turnwise, SB3 PPO and RLlib PPO.

    python -m benchmarks.continuous [--repeats 2] [--seconds 240]

Every system gets the same algorithm settings (the headline of issue 19's rule): 2,048
rows per update (16 envs x 128 steps), 10 epochs of 256-row minibatches, lr 1e-3, gamma
0.9, GAE/V-trace lambda 0.95, clip 0.2, no entropy bonus, gradient norm 0.5, value
weight 0.5, a 64x64 tanh MLP, and plain observations (turnwise's normalizer off).
Where a setting cannot be matched the report says so: RLlib has no KL early stop
(its KL penalty is switched off instead; SB3 and turnwise stop at 1.5 x 0.05).

"Solved" is a mean greedy return of -250 or better over the 10 held-out seeds that
every system is evaluated on (``benchmarks.systems.common``; random play scores about
-1,200, good controllers about -150). The systems alternate, ``--repeats`` runs each,
each run in a fresh process; the report gives medians and ranges of the training
seconds and env steps to solve, and env steps/s over each run's training time.
Writes ``benchmarks/results/continuous.json`` and the ``continuous`` section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import BENCHMARKS_MD, RESULTS_DIR, machine_info, publish
from benchmarks.suite import SolveBudget, measure

TASK = "pendulum"
THRESHOLD = -250.0
MATCHED = {  # system -> settings.extra giving it turnwise's +exp=pendulum settings
    "turnwise": {"overrides": ["learner.normalizer.kind=none"]},  # on +exp=pendulum
    "sb3": {
        "n_steps": 128, "batch_size": 256, "n_epochs": 10, "learning_rate": 1e-3,
        "gamma": 0.9, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0,
        "vf_coef": 0.5, "max_grad_norm": 0.5, "target_kl": 0.05,
    },
    "rllib": {
        "train_batch_size_per_learner": 2048, "minibatch_size": 256, "num_epochs": 10,
        "lr": 1e-3, "gamma": 0.9, "lambda_": 0.95, "clip_param": 0.2, "entropy_coeff": 0.0,
        "vf_loss_coeff": 0.5, "grad_clip": 0.5, "use_kl_loss": False,
        "vf_clip_param": 1e9,  # no value clipping, as turnwise and SB3
    },
}  # fmt: skip
UNMATCHED = {
    "rllib": "no KL early stop in RLlib's PPO: its KL penalty is off instead",
}


def run(repeats: int, seconds: float, work_dir: Path) -> list[dict[str, Any]]:
    """Alternate the systems ``repeats`` times; one time-to-solve run each time."""
    budget = SolveBudget(seconds, 10_000_000, 20_480)
    results = []
    for repeat in range(repeats):
        for system, extra in MATCHED.items():
            result = measure(system, "solve", TASK, seconds, work_dir, budget, extra)
            results.append({**result, "repeat": repeat})
    return results


def rate(result: dict[str, Any]) -> float | None:
    """Env steps per second of training time, up to the run's last evaluation."""
    last = (result.get("curve") or [None])[-1]
    return last["env_steps"] / last["seconds"] if last and last["seconds"] > 0 else None


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for system in MATCHED:
        runs = [r for r in results if r.get("system") == system]
        solved = [r["solved"] for r in runs if r.get("solved")]
        rows.append(
            {
                "system": system,
                "runs": len(runs),
                "solved": len(solved),
                "seconds": _spread([s["seconds"] for s in solved]),
                "env_steps": _spread([s["env_steps"] for s in solved]),
                "env_steps_per_second": _spread([x for r in runs if (x := rate(r))]),
                "best_eval_return": _spread(
                    [max(p["eval_return"] for p in r["curve"]) for r in runs if r.get("curve")]
                ),
                "errors": [r["error"][-300:] for r in runs if "error" in r],
            }
        )
    return rows


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _cell(spread: dict[str, float] | None, fmt: str) -> str:
    if spread is None:
        return "—"
    median, low, high = (format(spread[k], fmt) for k in ("median", "min", "max"))
    return median if low == high else f"{median} ({low} to {high})"


def render(report: dict[str, Any]) -> str:
    seconds = report["seconds"]
    lines = [
        "<!-- continuous:begin -->",
        "## Continuous control: Pendulum-v1 at matched settings",
        "",
        f"`{report['command']}` — {report['date']}, {report['machine']['cpu_model']}, "
        f"{report['machine']['cpu_count']} CPUs, load before the run "
        f"{report['machine']['load_average']}.",
        "",
        "Every system with the same algorithm settings (2,048 rows per update, 10 epochs x "
        "256-row minibatches, lr 1e-3, gamma 0.9, lambda 0.95, clip 0.2, no entropy bonus, "
        "64x64 tanh MLP, no observation normalization), alternating, "
        f"{report['repeats']} runs each, each capped at {seconds:.0f} s of training. Solved: "
        f"mean greedy return >= {THRESHOLD:.0f} on the 10 held-out seeds every system is "
        "evaluated on. Medians (range); time counts training only.",
        "",
        "| system | solved | seconds to solve | env steps to solve | env steps/s | "
        "best eval return |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["summary"]:
        lines.append(
            f"| {row['system']} | {row['solved']}/{row['runs']} | {_cell(row['seconds'], '.0f')}"
            f" | {_cell(row['env_steps'], ',.0f')} | {_cell(row['env_steps_per_second'], ',.0f')}"
            f" | {_cell(row['best_eval_return'], '.0f')} |"
        )
    lines += ["", "Settings that could not be matched:"]
    lines += [f"- {system}: {why}" for system, why in UNMATCHED.items()]
    failed = [row["system"] for row in report["summary"] if row["solved"] < row["runs"]]
    if failed:
        lines.append(
            f"- Not solved within the cap in every run: {', '.join(failed)} "
            "(the table's solve columns count the solved runs only)."
        )
    lines.append("<!-- continuous:end -->")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.continuous")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=240.0, help="time cap per run")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args(argv)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="turnwise-continuous-") as work:
        results = run(args.repeats, args.seconds, Path(work))
    report = {
        "benchmark": "continuous",
        "command": shlex.join(["python", "-m", "benchmarks.continuous", *argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "task": TASK,
        "threshold": THRESHOLD,
        "repeats": args.repeats,
        "seconds": args.seconds,
        "settings": MATCHED,
        "unmatched": UNMATCHED,
        "summary": summarize(results),
        "runs": results,
    }
    publish(report, render(report), "continuous", args.out_dir / "continuous.json", args.markdown)
    return report


if __name__ == "__main__":
    main()
