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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import alternating
from benchmarks.alternating import cell, solve_summary, spread
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


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for system in MATCHED:
        runs = [r for r in results if r.get("system") == system]
        best = [max(p["eval_return"] for p in r["curve"]) for r in runs if r.get("curve")]
        rows.append({"system": system, **solve_summary(runs), "best_eval_return": spread(best)})
    return rows


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
            f"| {row['system']} | {row['solved']}/{row['runs']} | {cell(row['seconds'], '.0f')}"
            f" | {cell(row['env_steps'], ',.0f')} | {cell(row['env_steps_per_second'], ',.0f')}"
            f" | {cell(row['best_eval_return'], '.0f')} |"
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


def fields(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "task": TASK,
        "threshold": THRESHOLD,
        "settings": MATCHED,
        "unmatched": UNMATCHED,
        "summary": summarize(results),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return alternating.main("continuous", argv, run, fields, render)


if __name__ == "__main__":
    main()
