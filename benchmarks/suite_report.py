"""Tables, target verdicts and the return-vs-wall-clock plot of a suite report.

A report (``benchmarks.suite.main``) holds its runs' descriptions (``runs``: label ->
system, settings, env case), the matched settings per experiment, each baseline's
unmatched settings, and one row per measurement, tagged with its run's label, repeat
and task; a row with ``error`` is a measurement that could not run. Where a run has
repeats the tables give the median and the range.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.alternating import cell, solve_summary, spread
from benchmarks.report import REPO

LABELS = {
    "turnwise": "turnwise",
    "rllib": "RLlib PPO",
    "sb3": "SB3 PPO",
    "sample_factory": "Sample Factory 2 APPO",
}
TASK_TITLES = {
    "warehouse": "Warehouse-v0 small",
    "warehouse_medium": "Warehouse-v0 medium",
    "warehouse_large": "Warehouse-v0 large",
    "cartpole": "CartPole-v1",
}
BATCHED, PLAIN = "turnwise", "turnwise-sync"  # turnwise's two env cases
MATCHED_BASELINES = ("rllib", "sb3", "sample_factory")
THROUGHPUT_X = {"rllib": 10.0, "sb3": 8.0}  # batched turnwise >= this x the matched baseline
CEILING_SHARE = 0.25  # batched turnwise >= 25% of the random-policy ceiling
SOLVE_FRACTION = 0.15  # batched turnwise's time to 90% <= 0.15x matched SB3's
PLAIN_CEILING_SHARE = 0.80  # turnwise-sync >= 80% of the plain-env ceiling
MEDIUM = "warehouse_medium"


def title(report: dict[str, Any], label: str) -> str:
    """A run's name in the tables: system, settings and env case."""
    run = report["runs"].get(label, {"system": label, "settings": "", "env": ""})
    name = LABELS.get(run["system"], run["system"])
    if run["settings"] == "turnwise":
        sync = " (`env.vectorization=sync`)" if run["env"] == "plain" else ""
        return f"{name}, {run['env']} env{sync}"
    return f"{name}, {run['settings']}"


def reason(row: dict[str, Any]) -> str:
    """Why a measurement could not run: the last line of its error."""
    lines = [line.strip() for line in str(row.get("error", "")).splitlines() if line.strip()]
    text = lines[-1] if lines else "unknown error"
    return "could not run: " + (text if len(text) <= 200 else text[:197] + "...")


def rows(report: dict[str, Any], section: str, label: str, task: str | None = None) -> list:
    """A run's rows of a section (on ``task``), failed ones included."""
    return [
        r
        for r in report.get(section, [])
        if r.get("run", r.get("system")) == label and (task is None or r.get("task") == task)
    ]


def ok(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in found if "error" not in r]


def throughput(report: dict[str, Any], label: str) -> float | None:
    """A run's median env steps/s over its throughput windows (None: none measured)."""
    rates = [r["env_steps_per_second"] for r in ok(rows(report, "throughput", label))]
    return statistics.median(rates) if rates else None


def solve_time(report: dict[str, Any], label: str, task: str) -> tuple[float, bool] | None:
    """(median seconds to 90%, lower bound?): a run that hit its cap counts with the
    training time it had, as a lower bound on its time; None when nothing ran."""
    times, bound = [], False
    for row in ok(rows(report, "solve", label, task)):
        if row.get("solved"):
            times.append(row["solved"]["seconds"])
        elif row.get("curve"):
            times.append(row["curve"][-1]["seconds"])
            bound = True
    return (statistics.median(times), bound) if times else None


def solved_count(report: dict[str, Any], label: str, task: str) -> tuple[int, int]:
    found = ok(rows(report, "solve", label, task))
    return sum(1 for r in found if r.get("solved")), len(found)


def ceiling_rate(report: dict[str, Any]) -> float:
    """The random-policy ceiling: the batched env's best rate in one process."""
    return max(row["env_steps_per_second"] for row in report["ceiling"])


def _verdict(case: str, target: str, measured: str | None, met: bool | None) -> dict[str, Any]:
    return {"case": case, "target": target, "measured": measured, "met": met}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's targets, each with what was measured and whether it is met (None: it
    could not be measured)."""
    ours = throughput(report, BATCHED)
    found = []
    for system, times in THROUGHPUT_X.items():
        found.append(_ratio_target(report, "batched env", ours, system, times))
    top = ceiling_rate(report)
    random_ceiling = "the random-policy ceiling"
    found.append(_share_target("batched env", random_ceiling, ours, top, CEILING_SHARE))
    found.append(_solve_target(report))
    plain = report.get("plain_ceiling") or {}
    ceiling = plain.get("ceiling")
    what = (
        f"the plain-env ceiling (one env's {plain['env_steps_per_second']:,.0f} steps/s x "
        f"{plain['actor_cores']} actor cores)"
        if ceiling
        else "the plain-env ceiling"
    )
    sync = throughput(report, PLAIN)
    found.append(_share_target("plain env", what, sync, ceiling, PLAIN_CEILING_SHARE))
    found.append(_ahead_target(report, sync))
    found += _medium_targets(report)
    return found


def _ratio_target(
    report: dict[str, Any], case: str, ours: float | None, system: str, times: float
) -> dict[str, Any]:
    theirs = throughput(report, system)
    target = f"throughput >= {times:g}x {LABELS[system]} at matched settings"
    if not ours or not theirs:
        return _verdict(case, target, _missing(report, "throughput", (BATCHED, system)), None)
    ratio = ours / theirs
    measured = f"{ratio:.1f}x ({ours:,.0f} vs {theirs:,.0f} env steps/s)"
    return _verdict(case, target, measured, ratio >= times)


def _share_target(
    case: str, what: str, ours: float | None, top: float | None, share: float
) -> dict[str, Any]:
    target = f"throughput >= {share:.0%} of {what}"
    if not ours or not top:
        return _verdict(case, target, None, None)
    measured = f"{ours / top:.1%} ({ours:,.0f} vs {top:,.0f} env steps/s)"
    return _verdict(case, target, measured, ours / top >= share)


def _missing(report: dict[str, Any], section: str, labels: tuple[str, ...]) -> str:
    """What kept a target from being measured."""
    parts = []
    for label in labels:
        found = rows(report, section, label)
        if not ok(found):
            why = reason(found[0]) if found else "not run in this mode"
            parts.append(f"{title(report, label)}: {why}")
    return "; ".join(parts) or "not measured"


def _solve_target(report: dict[str, Any]) -> dict[str, Any]:
    target = f"time to 90% of the oracle <= {SOLVE_FRACTION:g}x matched {LABELS['sb3']}'s"
    return _faster_target(report, "batched env", target, "warehouse", ("sb3",), SOLVE_FRACTION)


def _faster_target(
    report: dict[str, Any],
    case: str,
    target: str,
    task: str,
    baselines: tuple[str, ...],
    fraction: float,
) -> dict[str, Any]:
    """turnwise's (batched) median time to 90% against each baseline's (a capped
    baseline counts with the time it had: a lower bound); met when turnwise solved
    in every run and took less than ``fraction`` x each baseline's time."""
    done, runs = solved_count(report, BATCHED, task)
    if not runs:
        return _verdict(case, target, _missing(report, "solve", (BATCHED,)), None)
    if done < runs:
        return _verdict(case, target, f"turnwise reached it in {done} of {runs} runs", False)
    ours, _ = solve_time(report, BATCHED, task)
    parts, met = [], True
    for system in baselines:
        theirs = solve_time(report, system, task)
        if theirs is None:
            parts.append(f"{LABELS[system]} {_missing(report, 'solve', (system,))}")
            met = None if met else met  # unknown, unless another baseline already fails it
            continue
        seconds, bound = theirs
        ratio = ours / seconds
        parts.append(
            f"{ratio:.2f}x {LABELS[system]} ({'>= ' if bound else ''}{seconds:.0f} s"
            f"{', capped: a lower bound' if bound else ''})"
        )
        if ratio > fraction:
            met = False
    measured = f"turnwise {ours:.0f} s; " + "; ".join(parts)
    return _verdict(case, target, measured, met)


def _ahead_target(report: dict[str, Any], sync: float | None) -> dict[str, Any]:
    target = "throughput ahead of every matched baseline (" + ", ".join(
        LABELS[s] for s in MATCHED_BASELINES
    ) + ")"  # fmt: skip
    if not sync:
        return _verdict("plain env", target, _missing(report, "throughput", (PLAIN,)), None)
    parts, met = [], True
    for system in MATCHED_BASELINES:
        theirs = throughput(report, system)
        if not theirs:
            parts.append(f"{LABELS[system]} {_missing(report, 'throughput', (system,))}")
            met = None if met else met  # unknown, unless another baseline already fails it
            continue
        parts.append(f"{sync / theirs:.2f}x {LABELS[system]} ({theirs:,.0f})")
        if sync <= theirs:
            met = False
    return _verdict("plain env", target, f"{sync:,.0f} env steps/s: " + "; ".join(parts), met)


def _medium_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    case = "medium warehouse"
    done, runs = solved_count(report, BATCHED, MEDIUM)
    if runs:
        reached = _verdict(case, "turnwise reaches 90% of the oracle",
                           f"in {done} of {runs} runs", done == runs)  # fmt: skip
    else:
        reached = _verdict(case, "turnwise reaches 90% of the oracle",
                           _missing(report, "solve", (BATCHED,)), None)  # fmt: skip
    faster = _faster_target(
        report, case, "time to 90% below every matched baseline's", MEDIUM, MATCHED_BASELINES, 1.0
    )
    return [reached, faster]


def render(report: dict[str, Any], plot: Path) -> str:
    m = report["machine"]
    lines = [
        "<!-- suite:begin -->",
        "## Side by side: turnwise, RLlib PPO, Stable-Baselines3 PPO, Sample Factory 2 "
        "and the machine",
        "",
        f"Produced by `{report['command']}` ({report['mode']} mode) on {m['cpu_model']}, "
        f"{m['cpu_count']} CPUs, no GPU, {_load(report)}; "
        f"{report['date']}. Versions: torch {m['torch']}, Ray/RLlib {m['ray']}, "
        f"Stable-Baselines3 {m['stable_baselines3']}, Gymnasium {m['gymnasium']}, "
        f"pyarrow {m['pyarrow']}. Every measurement runs in its own process; where a run "
        "is repeated the systems alternate and the tables give the median (range).",
        "",
        _matched_paragraph(report),
        "",
        "### Targets",
        "",
        "| case | target | measured | met |",
        "|---|---|---|---|",
    ]
    for t in targets(report):
        verdict = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['case']} | {t['target']} | {t['measured'] or '-'} | {verdict} |")
    lines += _ceiling(report) + _throughput(report) + _unmatched(report)
    lines += _solve(report, plot) + _scaling(report) + _transport(report)
    lines.append("<!-- suite:end -->")
    return "\n".join(lines)


def _load(report: dict[str, Any]) -> str:
    """The load average (1, 5, 15 min) at the start and the end, as recorded."""
    end = report["machine"]["load_average"]
    if "load_average_start" not in report:  # reports before 2026-12-02: taken at the end
        return f"load average {end} when the report was written"
    return f"load average {report['load_average_start']} at the start, {end} at the end"


def _matched_paragraph(report: dict[str, Any]) -> str:
    m = (report.get("matched") or {}).get("warehouse")
    if not m:
        return ""
    network = "x".join(str(w) for w in m["hidden_sizes"])
    normalized = "normalized observations" if m["normalize_observations"] else "raw observations"
    return (
        f"**Matched settings** (the headline rows), read from `+exp={m['experiment']}`: "
        f"{m['rows_per_update']:,} rows per update (turnwise: one rollout actor's batch; "
        f"the baselines: {m['num_envs']} plain envs x {m['rollout_steps']} steps), "
        f"{m['epochs']} epochs of {m['minibatch_size']:,}-row minibatches, lr {m['lr']:g}, "
        f"gamma {m['gamma']:g}, lambda {m['gae_lambda']:g}, clip {m['clip']:g}, entropy "
        f"{m['entropy_coef']:g}, value weight {m['value_coef']:g}, gradient norm "
        f"{m['max_grad_norm']:g}, a {network} tanh MLP, {normalized} (clipped at "
        f"{m['normalizer_clip']:g}). What each baseline cannot match is listed under the "
        "throughput table. **Defaults** rows run each baseline with its own PPO defaults "
        "and the same network. **Env cases**: turnwise steps its batched NumPy env "
        "(`env.vectorization=auto`, its default) or one plain Gymnasium env per slot "
        "(`env.vectorization=sync`, what a user with their own simulator has); the baselines "
        "always step plain per-env Gymnasium envs, so their rows serve both cases."
    )


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
    plain = report.get("plain_ceiling")
    if plain:
        lines += [
            "",
            f"One plain Warehouse-v0 env (`gymnasium.make`, what the baselines and "
            f"turnwise-sync step) under a random policy: {plain['env_steps_per_second']:,.0f} "
            f"steps/s on one core; on the {plain['actor_cores']} cores turnwise's rollout "
            f"actors have, the plain-env ceiling is {plain['ceiling']:,.0f} env steps/s.",
        ]
    return lines


def _labels(report: dict[str, Any], section: str, task: str | None = None) -> list[str]:
    """The runs of a section in the order they were first measured."""
    return list(
        dict.fromkeys(
            r.get("run", r["system"])
            for r in report.get(section, [])
            if task is None or r.get("task") == task
        )
    )


def _throughput(report: dict[str, Any]) -> list[str]:
    batched, plain = throughput(report, BATCHED), throughput(report, PLAIN)
    lines = [
        "",
        "### 2. Sampling + learning throughput (Warehouse-v0 small)",
        "",
        "Env steps consumed by the learner over a fixed wall-clock window, start-up excluded.",
        "",
        "| run | runs | env steps/s | turnwise (batched) ÷ it | turnwise (plain) ÷ it | "
        "how it ran |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label in _labels(report, "throughput"):
        found = rows(report, "throughput", label)
        good = ok(found)
        if not good:
            lines.append(f"| {title(report, label)} | 0/{len(found)} | {reason(found[0])} | | | |")
            continue
        rates = spread([r["env_steps_per_second"] for r in good])
        median = rates["median"]
        lines.append(
            f"| {title(report, label)} | {len(good)}/{len(found)} | {cell(rates, ',.0f')} | "
            f"{_times(batched, median)} | {_times(plain, median)} | {_how(good[0])} |"
        )
    return lines


def _times(ours: float | None, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def _unmatched(report: dict[str, Any]) -> list[str]:
    found = report.get("unmatched") or {}
    if not found:
        return []
    lines = ["", "Settings the matched baselines cannot match:", ""]
    for system, why in found.items():
        for setting, text in why.items():
            lines.append(f"- {LABELS.get(system, system)}, {setting}: {text}")
    return lines


# Of an option dict (Sample Factory's command line), the entries that say how it ran;
# the rest repeat the matched settings above and are in suite.json.
LAYOUT_OPTIONS = ("num_workers", "num_envs_per_worker", "rollout", "batch_size", "num_epochs",
                  "num_batches_per_epoch")  # fmt: skip


def _how(row: dict[str, Any]) -> str:
    skip = {"system", "task", "env_steps", "seconds", "env_steps_per_second", "settings",
            "curve", "solved", "stopped_by", "budget", "error", "actors_x_envs", "run",
            "repeat"}  # fmt: skip
    shown = {k: _shown(v) for k, v in row.items()}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()) if k not in skip)


def _shown(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        layout = ", ".join(f"{k}={value[k]}" for k in LAYOUT_OPTIONS if k in value)
        return f"({layout}{'; ' if layout else ''}all {len(value)} in suite.json)"
    return value


def _best(row: dict[str, Any]) -> float:
    return max((p.get("fraction_of_baseline") or 0.0) for p in row["curve"])


def _solve(report: dict[str, Any], plot: Path) -> list[str]:
    lines = [
        "",
        "### 3. Time to 90% of the oracle",
        "",
        "Training wall-clock (start-up excluded; the baselines' clocks pause while they are "
        "evaluated, turnwise evaluates beside training) and env steps until the greedy policy "
        "reaches 90% of the oracle's return on the task's 32 held-out seeds, evaluated every "
        "`eval_every` env steps, with a time cap per task. A run that hits the cap gives its "
        "env steps there and its best evaluation.",
        "",
        "| task | run | solved | seconds to 90% | env steps to 90% | env steps/s | "
        "best fraction of the oracle | env steps at the end | cap |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tasks = list(dict.fromkeys(r["task"] for r in report["solve"]))
    for task in tasks:
        for label in _labels(report, "solve", task):
            lines.append(_solve_row(report, task, label))
    try:
        shown = plot.resolve().relative_to(REPO)
    except ValueError:
        shown = plot.name
    lines += ["", f"![evaluation return against training wall-clock]({shown})"]
    return lines


def _solve_row(report: dict[str, Any], task: str, label: str) -> str:
    found = rows(report, "solve", label, task)
    good = [r for r in ok(found) if r.get("curve")]
    name = f"| {TASK_TITLES.get(task, task)} | {title(report, label)} |"
    if not good:
        why = reason(found[0]) if found and "error" in found[0] else "no evaluation"
        return f"{name} 0/{len(found)} | {why} | | | | | |"
    summary = solve_summary(good)
    return (
        f"{name} {summary['solved']}/{len(found)} | {cell(summary['seconds'], '.0f')} | "
        f"{cell(summary['env_steps'], ',.0f')} | "
        f"{cell(summary['env_steps_per_second'], ',.0f')} | "
        f"{cell(spread([_best(r) for r in good]), '.2f')} | "
        f"{cell(spread([r['curve'][-1]['env_steps'] for r in good]), ',.0f')} | "
        f"{good[0]['budget']['seconds']:.0f} s |"
    )


def _scaling(report: dict[str, Any]) -> list[str]:
    found = [r for r in report["scaling"] if "error" not in r]
    base = found[0]["env_steps_per_second"] if found else None
    lines = [
        "",
        "### 4. Scaling (turnwise, batched env, Warehouse-v0 small)",
        "",
        "| rollout actors x envs per actor | env steps/s | vs the first row |",
        "|---|---:|---:|",
    ]
    for row in found:
        rate_ = row["env_steps_per_second"]
        lines.append(f"| {row['actors_x_envs']} | {rate_:,.0f} | {rate_ / base:.2f}x |")
    for row in report["scaling"]:
        if "error" in row:
            lines.append(f"| {row.get('actors_x_envs', '?')} | {reason(row)} | |")
    return lines


def _transport(report: dict[str, Any]) -> list[str]:
    t = report["transport"]
    stages = t["seconds_per_batch"]
    batch_rows = t["batch_rows"]
    lines = [
        "",
        "### 5. Transport, and where the time goes",
        "",
        f"One default batch ({batch_rows:,} rows, {t['batch_bytes'] / 1e6:.1f} MB of Arrow) "
        "through each stage, timed alone (median per batch):",
        "",
        "| stage | ms per batch | rows/s at this stage alone |",
        "|---|---:|---:|",
    ]
    for name, seconds in stages.items():
        lines.append(
            f"| {name.replace('_', ' ')} | {seconds * 1e3:.1f} | {batch_rows / seconds:,.0f} |"
        )
    lines += [
        "",
        f"A batch's trip through Ray's object store (an actor returns it, another process "
        f"gets it) takes {stages['object_store'] * 1e3:.1f} ms "
        f"({t['object_store_bytes_per_second'] / 1e6:,.0f} MB/s), "
        f"{t['transport_share_of_learner_time']:.0%} of an update's time. In a run the rollout "
        "actor pays that while the learner updates on the previous batch; the learner's own "
        'wait for a batch is `fetch_ms` in metrics.jsonl (~1 ms: "Learner speed-ups").',
        "",
        _bottleneck(report),
    ]
    return lines


def _bottleneck(report: dict[str, Any]) -> str:
    """Where a turnwise run's time goes, in one paragraph from the measured stages."""
    t = report["transport"]
    stages, batch_rows = t["seconds_per_batch"], t["batch_rows"]
    learn = batch_rows / stages["learner_update"]
    collect = batch_rows / stages["collect_total"]
    env_share = stages["env"] / stages["collect_total"]
    ours = throughput(report, BATCHED)
    measured = f" (measured: {ours:,.0f} env steps/s)" if ours else ""
    return (
        f"Where turnwise's time goes: the learner's PPO update alone handles {learn:,.0f} rows/s "
        f"and one rollout actor collects {collect:,.0f} rows/s, of which the env's own "
        f"stepping is {env_share:.0%}; on this machine's {report['machine']['cpu_count']} "
        "cores the actors and the learner share the CPUs, so a run's throughput"
        f"{measured} sits below both, far below the env-only ceiling."
    )


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Evaluation return / oracle against training wall-clock, one panel per task, one
    line per run (a run keeps its colour in every panel; repeats share it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in report["solve"]))
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(6 * max(len(tasks), 1), 4))
    axes = [axes] if len(tasks) <= 1 else list(axes)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(dict.fromkeys(lb for task in tasks for lb in _labels(report, "solve", task)))
    colours = {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}  # one per run
    for ax, task in zip(axes, tasks, strict=False):
        for label in _labels(report, "solve", task):
            for j, row in enumerate(ok(rows(report, "solve", label, task))):
                curve = row.get("curve") or []
                ax.plot(
                    [p["seconds"] for p in curve],
                    [p.get("fraction_of_baseline") or 0.0 for p in curve],
                    marker="o",
                    color=colours[label],
                    label=title(report, label) if j == 0 else None,
                )
        ax.axhline(0.9, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=1)  # seconds for turnwise, minutes for others
        ax.set_xlim(left=0)
        ax.set_xlabel("training wall-clock (s)")
        ax.set_ylabel("eval return / oracle")
        ax.set_title(TASK_TITLES.get(task, task))
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
