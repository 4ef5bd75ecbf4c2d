"""Memory side by side: Warehouse-Memory-v0 with turnwise's LSTM and sb3-contrib's RecurrentPPO.

    python -m benchmarks.memory [--repeats 2] [--seconds 240]

The task (docs/simulator.md): an order is shown only on the step it is issued, so only a
policy with memory reaches the oracle (10.97 per shift); none without memory can expect
more than 0.295 of it. "Solved" is 90% of the oracle's return on the evaluator's fixed
episodes (``benchmarks.systems.common``, the task's ``eval_episodes`` seeds from
1,000,000), greedy, one recurrent state per episode.

Three runs alternate, ``--repeats`` times each, each in a fresh process and capped at
``--seconds`` of training: turnwise's ``+exp=warehouse_memory`` on its batched NumPy env
(``turnwise``), the same on one plain Gymnasium env per slot (``turnwise-sync``:
``env.vectorization=sync``, what the other system steps), and sb3-contrib's
``RecurrentPPO`` on ``gymnasium.make("Warehouse-Memory-v0")`` envs in a ``DummyVecEnv``.
RecurrentPPO gets turnwise's settings, read from the experiment's config (``matched``):
the rows per update (one turnwise update is one actor's batch: envs per actor x fragment
length, so SB3 runs that many envs for that many steps), epochs, minibatch rows, lr,
gamma, lambda, clip, entropy and value weights, gradient norm, the LSTM width shared by
actor and critic, the 64x64 tanh MLPs and normalized observations; what cannot be
matched is listed (``UNMATCHED``). The report gives medians and ranges of training
seconds and env steps to solve and env steps/s; it writes
``benchmarks/results/memory.json`` and the ``memory`` section of BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import alternating
from benchmarks.alternating import cell, solve_summary, spread
from benchmarks.suite import SolveBudget, measure
from benchmarks.systems.common import TASKS
from benchmarks.systems.common import matched as common_matched
from benchmarks.systems.sb3_ppo import MATCHED_KEYWORDS
from turnwise.config import compose_config

TASK = "warehouse_memory"
EXPERIMENT = ["+exp=warehouse_memory"]
RUNS = {  # label -> (system, settings.extra beyond the matched ones)
    "turnwise": ("turnwise", {}),
    "turnwise-sync": ("turnwise", {"overrides": ["env.vectorization=sync"]}),
    "sb3-contrib RecurrentPPO": ("sb3_recurrent", {}),
}
UNMATCHED = {
    "sb3-contrib RecurrentPPO": (
        "GAE on the rollout's own policy (turnwise: V-trace against the behaviour policy, "
        "one update of lag); minibatches are runs of rows split at episode starts and "
        "padded (turnwise: whole fragments of whole envs); observations normalized by "
        "VecNormalize's mean and variance over the whole run (turnwise: over its last 200K "
        "env steps), both clipped at 10; rollout and update "
        "alternate in one process (turnwise: two rollout actors beside the learner)"
    ),
}


def matched() -> dict[str, Any]:
    """RecurrentPPO's keyword arguments that give it ``+exp=warehouse_memory``'s settings:
    SB3's PPO keywords (``sb3_ppo.MATCHED_KEYWORDS``) in turnwise's own layout (one
    actor's envs, its fragment length per update), and the recurrent core."""
    config = compose_config(EXPERIMENT)
    settings = common_matched(TASK, num_envs=config.actors.envs_per_actor)
    return {
        **settings.keywords(MATCHED_KEYWORDS),
        "lstm_hidden_size": config.learner.model.core_size,
        "shared_lstm": True,  # turnwise: one core read by both heads
    }


def run(repeats: int, seconds: float, work_dir: Path) -> list[dict[str, Any]]:
    """Alternate the runs ``repeats`` times; one time-to-solve measurement each time."""
    settings = matched()
    num_envs = settings.pop("num_envs")
    budget = SolveBudget(seconds, 10_000_000, 100_000)
    results = []
    for repeat in range(repeats):
        for label, (system, extra) in RUNS.items():
            extra = {**(settings if system == "sb3_recurrent" else {}), **extra}
            result = measure(
                system, "solve", TASK, seconds, work_dir, budget, extra, num_envs=num_envs
            )
            results.append({**result, "run": label, "repeat": repeat})
    return results


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label in RUNS:
        runs = [r for r in results if r.get("run") == label and r.get("curve")]
        ends = [r["curve"][-1]["env_steps"] for r in runs]
        best = [max((p.get("fraction_of_baseline") or 0.0) for p in r["curve"]) for r in runs]
        rows.append(
            {
                "run": label,
                **solve_summary([r for r in results if r.get("run") == label]),
                "env_steps_at_end": spread(ends),
                "best_fraction": spread(best),
            }
        )
    return rows


def verdict(summary: list[dict[str, Any]]) -> str:
    """Which runs reached 90% of the oracle, and when; which did not within the cap."""
    parts = []
    for row in summary:
        if row["solved"]:
            parts.append(
                f"{row['run']} reached 90% of the oracle in {row['solved']} of {row['runs']} "
                f"runs, after {cell(row['seconds'], '.0f')} s and "
                f"{cell(row['env_steps'], ',.0f')} env steps (medians, range)"
            )
        else:
            best, steps = cell(row["best_fraction"], ".2f"), cell(row["env_steps_at_end"], ",.0f")
            parts.append(
                f"{row['run']} did not within the cap: {steps} env steps in, its best "
                f"evaluation at {best} of the oracle"
            )
    return "Result: " + "; ".join(parts) + "."


def per_step(results: list[dict[str, Any]]) -> str:
    """Every run's evaluation at the fewest env steps any run ended with: learning per env
    step, apart from speed."""
    ends = [r["curve"][-1]["env_steps"] for r in results if r.get("curve")]
    if not ends:
        return ""
    at = min(ends)
    parts = []
    for label in RUNS:
        reads = [
            max((p["fraction_of_baseline"] or 0.0) for p in r["curve"] if p["env_steps"] <= at)
            for r in results
            if r.get("run") == label and r.get("curve") and r["curve"][0]["env_steps"] <= at
        ]
        parts.append(f"{label} {cell(spread(reads), '.2f')}")
    return (
        f"Best evaluation by {at:,} env steps (the shortest run's end): " + ", ".join(parts) + "."
    )


def render(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "<!-- memory:begin -->",
        "## Memory: Warehouse-Memory-v0, turnwise's LSTM and sb3-contrib's RecurrentPPO",
        "",
        f"`{report['command']}` — {report['date']}, {report['machine']['cpu_model']}, "
        f"{report['machine']['cpu_count']} CPUs, load before the run "
        f"{report['machine']['load_average']}, after {report['load_average_end']}.",
        "",
        "An order is shown only on the step it is issued (docs/simulator.md): the oracle "
        "earns 10.97 per shift, no policy without memory can expect more than 0.295 of it. "
        "Solved: a greedy mean return of 90% of the oracle's on the evaluator's "
        f"{report['eval_episodes']} fixed episodes, one recurrent state per episode. "
        f"Alternating, {report['repeats']} runs each, each capped at "
        f"{report['seconds']:.0f} s of training. Matched settings (`+exp=warehouse_memory`): "
        f"{settings['num_envs']} envs x {settings['n_steps']} steps = "
        f"{settings['num_envs'] * settings['n_steps']:,} rows per update, "
        f"{settings['n_epochs']} epochs of {settings['batch_size']}-row minibatches, lr "
        f"{settings['learning_rate']:g}, gamma {settings['gamma']:g}, lambda "
        f"{settings['gae_lambda']:g}, entropy {settings['ent_coef']:g}, one LSTM of "
        f"{settings['lstm_hidden_size']} shared by actor and critic, 64x64 tanh MLPs. "
        "turnwise runs its two rollout actors of that many envs each; `turnwise-sync` "
        "steps one plain Gymnasium env per slot (`env.vectorization=sync`) instead of "
        "the batched NumPy env. Medians (range); time counts training only (SB3's clock "
        "pauses while it is evaluated, turnwise evaluates beside training).",
        "",
        "| run | solved | seconds to 90% | env steps to 90% | env steps/s | "
        "best fraction of the oracle |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["summary"]:
        lines.append(
            f"| {row['run']} | {row['solved']}/{row['runs']} | {cell(row['seconds'], '.0f')}"
            f" | {cell(row['env_steps'], ',.0f')} | {cell(row['env_steps_per_second'], ',.0f')}"
            f" | {cell(row['best_fraction'], '.2f')} |"
        )
    lines += ["", verdict(report["summary"]), "", per_step(report["runs"]), ""]
    lines.append("Settings not matched:")
    lines += [f"- {label}: {why}" for label, why in UNMATCHED.items()]
    lines.append("<!-- memory:end -->")
    return "\n".join(lines)


def fields(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "task": TASK,
        "eval_episodes": TASKS[TASK].eval_episodes,
        "settings": matched(),
        "unmatched": UNMATCHED,
        "summary": summarize(results),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return alternating.main("memory", argv, run, fields, render)


if __name__ == "__main__":
    main()
