"""Tables, target verdicts and the return-vs-wall-clock plot of a suite report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import REPO

LABELS = {"turnwise": "turnwise", "rllib": "RLlib PPO", "sb3": "SB3 PPO"}
THROUGHPUT_X = 5.0  # turnwise >= 5x each baseline
SOLVE_FRACTION = 0.5  # turnwise's time to solve <= half the faster baseline's
CEILING_SHARE = 0.25  # turnwise >= 25% of the random-policy ceiling


def by_system(rows: list[dict[str, Any]], task: str | None = None) -> dict[str, dict[str, Any]]:
    return {r["system"]: r for r in rows if task is None or r.get("task") == task}


def ceiling_rate(report: dict[str, Any]) -> float:
    """The random-policy ceiling: the batched env's best rate in one process."""
    return max(row["env_steps_per_second"] for row in report["ceiling"])


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured ratio and verdict (None: could not be measured)."""
    rates = {s: r.get("env_steps_per_second") for s, r in by_system(report["throughput"]).items()}
    ours = rates.get("turnwise")
    rows = []
    for system in ("rllib", "sb3"):
        theirs = rates.get(system)
        ratio = ours / theirs if ours and theirs else None
        measured = f"{ratio:.1f}x ({ours:,.0f} vs {theirs:,.0f} env steps/s)" if ratio else None
        rows.append({
            "target": f"throughput >= {THROUGHPUT_X:g}x {LABELS[system]}",
            "measured": measured,
            "met": None if ratio is None else ratio >= THROUGHPUT_X,
        })  # fmt: skip
    rows.append(_solve_target(report))
    top = ceiling_rate(report)
    share = ours / top if ours else None
    rows.append({
        "target": f"throughput >= {CEILING_SHARE:.0%} of the random-policy ceiling",
        "measured": f"{share:.1%} ({ours:,.0f} vs {top:,.0f} env steps/s)" if share else None,
        "met": None if share is None else share >= CEILING_SHARE,
    })  # fmt: skip
    return rows


def _solve_target(report: dict[str, Any]) -> dict[str, Any]:
    target = f"time to 90% of the oracle <= {SOLVE_FRACTION:g}x the faster baseline"
    runs = by_system(report["solve"], "warehouse")
    ours = (runs.get("turnwise") or {}).get("solved")
    if not ours:
        return {"target": target, "measured": "turnwise did not reach it", "met": False}
    times, bounds = {}, []
    for system in ("rllib", "sb3"):
        run = runs.get(system) or {}
        if run.get("solved"):
            times[system] = run["solved"]["seconds"]
        elif run.get("curve"):  # capped: its time is at least the training time it got
            times[system] = run["curve"][-1]["seconds"]
            bounds.append(system)
    if not times:
        return {"target": target, "measured": "no baseline measured", "met": None}
    faster = min(times, key=times.get)
    ratio = ours["seconds"] / times[faster]
    bound = " (it did not get there: a lower bound on its time)" if faster in bounds else ""
    return {
        "target": target,
        "measured": f"{ratio:.2f}x: turnwise {ours['seconds']:.0f} s vs {LABELS[faster]} "
        f"{'>= ' if bound else ''}{times[faster]:.0f} s{bound}",
        "met": ratio <= SOLVE_FRACTION,
    }


def render(report: dict[str, Any], plot: Path) -> str:
    m = report["machine"]
    lines = [
        "<!-- suite:begin -->",
        "## Side by side: turnwise, RLlib PPO, Stable-Baselines3 PPO and the machine",
        "",
        f"Produced by `{report['command']}` ({report['mode']} mode) on {m['cpu_model']}, "
        f"{m['cpu_count']} CPUs, no GPU, load average {m['load_average']} at the end; "
        f"{report['date']}. Versions: torch {m['torch']}, Ray/RLlib {m['ray']}, "
        f"Stable-Baselines3 {m['stable_baselines3']}, Gymnasium {m['gymnasium']}, "
        f"pyarrow {m['pyarrow']}. Every system runs in its own process, one after another, "
        "with the same env, network (MLP 64x64, tanh) and seed; turnwise as its "
        "`+exp=` experiments configure it, RLlib and SB3 with their default PPO settings.",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in targets(report):
        verdict = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured'] or '-'} | {verdict} |")
    lines += _ceiling(report) + _throughput(report) + _solve(report, plot)
    lines += _scaling(report) + _transport(report)
    lines.append("<!-- suite:end -->")
    return "\n".join(lines)


def _ceiling(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### 1. Ceiling",
        "",
        "Batched Warehouse-v0 (small) under a random policy, and the policy's forward pass "
        "alone, in one process (one core, torch on one thread).",
        "",
        "| batch size | env steps/s (random policy) | policy forward rows/s |",
        "|---:|---:|---:|",
    ]
    for row in report["ceiling"]:
        lines.append(
            f"| {row['batch_size']:,} | {row['env_steps_per_second']:,.0f} | "
            f"{row['forward_rows_per_second']:,.0f} |"
        )
    return lines


def _throughput(report: dict[str, Any]) -> list[str]:
    rows = by_system(report["throughput"])
    ours = (rows.get("turnwise") or {}).get("env_steps_per_second")
    lines = [
        "",
        "### 2. Sampling + learning throughput (Warehouse-v0)",
        "",
        "Env steps consumed by the learner over a fixed wall-clock window, start-up excluded.",
        "",
        "| system | env steps | window s | env steps/s | turnwise / system | how it ran |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for system, row in rows.items():
        if "error" in row:
            lines.append(f"| {LABELS[system]} | failed | | | | see suite.json |")
            continue
        rate = row["env_steps_per_second"]
        lines.append(
            f"| {LABELS[system]} | {row['env_steps']:,} | {row['seconds']:.0f} | {rate:,.0f} | "
            f"{ours / rate if ours and rate else 0:.1f}x | {_how(row)} |"
        )
    return lines


def _how(row: dict[str, Any]) -> str:
    skip = {"system", "task", "env_steps", "seconds", "env_steps_per_second", "settings",
            "curve", "solved", "stopped_by", "budget", "error", "actors_x_envs"}  # fmt: skip
    shown = {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()) if k not in skip)


def _solve(report: dict[str, Any], plot: Path) -> list[str]:
    lines = [
        "",
        "### 3. Time to solve",
        "",
        "Training wall-clock (start-up excluded; RLlib's and SB3's clocks pause while they "
        "are evaluated, turnwise evaluates beside training) and env steps until the greedy "
        "policy reaches 90% of the oracle's return on Warehouse-v0's 32 held-out seeds, or "
        "an evaluation return of 450 on 10 held-out CartPole-v1 seeds; evaluated every "
        "`eval_every` env steps, with a time cap.",
        "",
        "| task | system | solved at | env steps | stopped by | best evaluation | cap |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for row in report["solve"]:
        if "error" in row:
            lines.append(f"| {row['task']} | {LABELS[row['system']]} | failed | | | | |")
            continue
        solved, curve = row["solved"], row["curve"]
        best = max(curve, key=lambda p: p["eval_return"]) if curve else None
        score = "-" if best is None else (
            f"{best['fraction_of_baseline']:.2f} of oracle"
            if best.get("fraction_of_baseline") is not None else f"return {best['eval_return']:.0f}"
        )  # fmt: skip
        at = f"{solved['seconds']:.0f} s" if solved else "not reached"
        steps = f"{solved['env_steps']:,}" if solved else "-"
        lines.append(
            f"| {row['task']} | {LABELS[row['system']]} | {at} | {steps} | {row['stopped_by']} | "
            f"{score} | {row['budget']['seconds']:.0f} s |"
        )
    try:
        shown = plot.resolve().relative_to(REPO)
    except ValueError:
        shown = plot.name
    lines += ["", f"![evaluation return against training wall-clock]({shown})"]
    return lines


def _scaling(report: dict[str, Any]) -> list[str]:
    rows = [r for r in report["scaling"] if "error" not in r]
    base = rows[0]["env_steps_per_second"] if rows else None
    lines = [
        "",
        "### 4. Scaling (turnwise, Warehouse-v0)",
        "",
        "| rollout actors x envs per actor | env steps/s | vs the first row |",
        "|---|---:|---:|",
    ]
    for row in rows:
        rate = row["env_steps_per_second"]
        lines.append(f"| {row['actors_x_envs']} | {rate:,.0f} | {rate / base:.2f}x |")
    return lines


def _transport(report: dict[str, Any]) -> list[str]:
    t = report["transport"]
    stages = t["seconds_per_batch"]
    rows = t["batch_rows"]
    lines = [
        "",
        "### 5. Transport, and where the time goes",
        "",
        f"One default batch ({rows:,} rows, {t['batch_bytes'] / 1e6:.1f} MB of Arrow) through "
        "each stage, timed alone (median per batch):",
        "",
        "| stage | ms per batch | rows/s at this stage alone |",
        "|---|---:|---:|",
    ]
    for name, seconds in stages.items():
        lines.append(f"| {name.replace('_', ' ')} | {seconds * 1e3:.1f} | {rows / seconds:,.0f} |")
    lines += [
        "",
        f"The object store moves {t['object_store_bytes_per_second'] / 1e6:,.0f} MB/s; moving a "
        f"batch costs {t['transport_share_of_learner_time']:.1%} of the learner's time on it.",
        "",
        _bottleneck(report),
    ]
    return lines


def _bottleneck(report: dict[str, Any]) -> str:
    """Where a turnwise run's time goes, in one paragraph from the measured stages."""
    t = report["transport"]
    stages, rows = t["seconds_per_batch"], t["batch_rows"]
    learn = rows / stages["learner_update"]
    collect = rows / stages["collect_total"]
    env_share = stages["env"] / stages["collect_total"]
    ours = (by_system(report["throughput"]).get("turnwise") or {}).get("env_steps_per_second")
    measured = f" (measured: {ours:,.0f} env steps/s)" if ours else ""
    return (
        f"Where turnwise's time goes: the learner's PPO update alone handles {learn:,.0f} rows/s "
        f"and one rollout actor collects {collect:,.0f} rows/s, of which the env's own "
        f"stepping is {env_share:.0%}; on this machine's {report['machine']['cpu_count']} "
        "cores the actors and the learner share the CPUs, so a run's throughput"
        f"{measured} sits below both, far below the env-only ceiling: learning, not "
        "simulation or transport, is what bounds it."
    )


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Evaluation return against training wall-clock, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in report["solve"]))
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(6 * max(len(tasks), 1), 4))
    axes = [axes] if len(tasks) <= 1 else list(axes)
    for ax, task in zip(axes, tasks, strict=False):
        oracle = task == "warehouse"
        for system, row in by_system(report["solve"], task).items():
            curve = row.get("curve") or []
            ys = [p["fraction_of_baseline"] if oracle else p["eval_return"] for p in curve]
            ax.plot([p["seconds"] for p in curve], ys, marker="o", label=LABELS[system])
        ax.axhline(0.9 if oracle else 450, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=1)  # seconds for turnwise, minutes for others
        ax.set_xlim(left=0)
        ax.set_xlabel("training wall-clock (s)")
        ax.set_ylabel("eval return / oracle" if oracle else "eval return")
        ax.set_title({"warehouse": "Warehouse-v0", "cartpole": "CartPole-v1"}.get(task, task))
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
