"""Side by side: turnwise against RLlib PPO, SB3 PPO, Sample Factory 2 and the machine.

    python -m benchmarks [--mode quick|full]

Durations on a quiet 2-core machine (``longest_seconds``: every window and cap in full
plus 15 s of start-up per process; runs that solve early take less): full at most ~73
minutes (about 60 as turnwise and SB3 solve before their caps), quick at most ~18, tiny
(the harness test) ~3. On a loaded machine every figure, and the duration, suffers.

The headline is matched settings: every baseline runs with turnwise's own algorithm
settings, read from ``+exp=<task>``'s config (``benchmarks.systems.common.matched``: rows
per update, epochs, minibatch rows, lr, gamma, lambda, clip, entropy and value weights,
gradient norm, the 64x64 tanh network, observation normalization), each adapter turning
them into its own keywords (``matched_extra``) and listing what it cannot match
(``UNMATCHED``). Secondary rows run each baseline with its own defaults, labelled so.

Two env cases: turnwise on its batched NumPy env (``env.vectorization=auto``, its
default; run ``turnwise``) and on one plain Gymnasium env per slot
(``env.vectorization=sync``; run ``turnwise-sync``). The baselines always step plain
per-env Gymnasium envs, so one baseline measurement serves both cases.

Sections, measured in one run on one machine: (1) the ceiling (the batched env under a
random policy, the policy's forward pass alone, and one plain env's own steps/s);
(2) sampling + learning throughput over a fixed wall-clock window; (3) time to 90% of the
oracle on Warehouse-v0 small, medium and large (held-out seeds, greedy) with a time cap
per task; (4) turnwise's scaling with rollout actors and envs per actor; (5) the
transport profile; and the targets of issue 19, each met or not. Where a mode repeats a
measurement the runs alternate (turnwise, turnwise-sync, rllib, sb3, sample_factory,
then again) and the report gives medians and ranges. Every system measurement runs in a
fresh process (``python -m benchmarks.systems``); one that fails, or a system that is
not installed, is recorded as its row's error ("could not run: ...") and the run goes
on. Writes ``benchmarks/results/suite.json``, the ``suite`` section of BENCHMARKS.md and
``benchmarks/results/return_vs_wallclock.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import components
from benchmarks.report import (
    BENCHMARKS_MD,
    REPO,
    RESULTS_DIR,
    load_average,
    machine_info,
    publish,
)
from benchmarks.suite_report import plot_curves, render
from benchmarks.systems.common import TASKS, matched
from turnwise.run_store import write_atomic

log = logging.getLogger("benchmarks.suite")

BASELINES = ("rllib", "sb3", "sample_factory")
SYSTEMS = ("turnwise", *BASELINES)


@dataclass(frozen=True)
class SolveBudget:
    seconds: float
    env_steps: int
    eval_every: int


@dataclass(frozen=True)
class Run:
    """One row of the report: a system, whose settings, on which env case."""

    label: str
    system: str
    settings: Literal["turnwise", "matched", "defaults"]  # turnwise: its own +exp=
    env: Literal["batched", "plain"]  # plain: one Gymnasium env per slot
    overrides: tuple[str, ...] = ()  # turnwise's config overrides


RUNS = {
    run.label: run
    for run in (
        Run("turnwise", "turnwise", "turnwise", "batched"),
        Run("turnwise-sync", "turnwise", "turnwise", "plain", ("env.vectorization=sync",)),
        *(Run(system, system, "matched", "plain") for system in BASELINES),
        *(Run(f"{system}-defaults", system, "defaults", "plain") for system in BASELINES),
    )
}
MATCHED = ("turnwise", "turnwise-sync", *BASELINES)  # alternating in this order
# the large task (and quick mode's medium): turnwise's batched env only, since the plain
# env's ~8K env steps/s cannot reach 90% of the oracle within the cap
BATCHED_MATCHED = ("turnwise", *BASELINES)
DEFAULTS = tuple(f"{system}-defaults" for system in BASELINES)


@dataclass(frozen=True)
class Case:
    """Runs measured alike: ``repeats`` rounds of ``runs``, alternating."""

    what: Literal["throughput", "solve"]
    task: str
    runs: tuple[str, ...]  # labels of RUNS
    seconds: float  # throughput window, or time cap
    repeats: int = 1
    budget: SolveBudget | None = None  # solve


def _solve(task: str, runs: tuple[str, ...], cap: float, every: int, repeats: int = 1) -> Case:
    return Case("solve", task, runs, cap, repeats, SolveBudget(cap, 50_000_000, every))


@dataclass(frozen=True)
class Mode:
    """What a mode measures, and for how long."""

    cases: tuple[Case, ...]
    scaling: tuple[tuple[int, int], ...]  # (rollout actors, envs per actor)
    scaling_seconds: float
    ceiling_batches: tuple[int, ...]
    ceiling_seconds: float
    transport_batches: int


SCALING = ((1, 128), (2, 128), (4, 128), (2, 1))
STARTUP_SECONDS = 15  # a measurement process's start-up on 2 cores (Ray, imports)
MODES = {
    "full": Mode(
        cases=(
            Case("throughput", "warehouse", MATCHED, 25, repeats=2),
            Case("throughput", "warehouse", DEFAULTS, 25),
            _solve("warehouse", MATCHED, 120, 100_000, repeats=2),
            _solve("warehouse", DEFAULTS, 100, 100_000),
            _solve("warehouse_medium", MATCHED, 240, 250_000),
            _solve("warehouse_large", BATCHED_MATCHED, 150, 500_000),
        ),
        scaling=SCALING,
        scaling_seconds=20,
        ceiling_batches=(128, 1024, 4096),
        ceiling_seconds=1.0,
        transport_batches=10,
    ),
    "quick": Mode(
        cases=(
            Case("throughput", "warehouse", MATCHED, 10),
            Case("throughput", "warehouse", DEFAULTS, 10),
            _solve("warehouse", MATCHED, 60, 100_000),
            _solve("warehouse_medium", BATCHED_MATCHED, 90, 250_000),
        ),
        scaling=SCALING[:2],
        scaling_seconds=8,
        ceiling_batches=(128, 1024),
        ceiling_seconds=0.3,
        transport_batches=5,
    ),
    # The harness test: every system and env case once, well-formed results, not timings.
    # One process per run: the throughput path is the scaling run's (turnwise); the
    # planning and report of the other cases are unit-tested.
    "tiny": Mode(
        cases=(Case("solve", "warehouse", MATCHED, 10, budget=SolveBudget(10, 4_096, 4_096)),),
        scaling=((2, 16),),
        scaling_seconds=2,
        ceiling_batches=(16,),
        ceiling_seconds=0.05,
        transport_batches=1,
    ),
}


def measure(
    system: str,
    what: str,
    task: str,
    seconds: float,
    work_dir: Path,
    budget: SolveBudget | None = None,
    extra: dict[str, Any] | None = None,
    num_envs: int | None = None,
) -> dict[str, Any]:
    """One system measurement in a fresh process; a failure is recorded, not raised.
    ``num_envs``: the parallel envs of the baselines (``Settings.num_envs`` if None)."""
    out = work_dir / f"{system}-{what}-{task}-{len(list(work_dir.iterdir()))}.json"
    command = [
        sys.executable, "-m", "benchmarks.systems", system, what, task,
        "--seconds", str(seconds), "--out", str(out), "--extra", json.dumps(extra or {}),
    ]  # fmt: skip
    if budget is not None:
        command += ["--env-steps", str(budget.env_steps), "--eval-every", str(budget.eval_every)]
    if num_envs is not None:
        command += ["--num-envs", str(num_envs)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log.info("%s", shlex.join(command[1:]))
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3 * seconds + 600
        )
    except subprocess.TimeoutExpired as error:
        return {"system": system, "task": task, "error": f"timed out after {error.timeout:.0f} s"}
    if done.returncode != 0 or not out.exists():
        log.error("%s %s %s failed:\n%s", system, what, task, done.stderr[-3000:])
        return {"system": system, "task": task, "error": done.stderr[-3000:] or "no output"}
    return json.loads(out.read_text())


def _module(system: str):
    from benchmarks.systems.__main__ import SYSTEMS as MODULES

    if system not in MODULES:
        raise LookupError(f"{system!r} is not a system of benchmarks.systems")
    return importlib.import_module(MODULES[system])


def matched_extra(system: str, experiment: str) -> dict[str, Any]:
    """A baseline's ``settings.extra`` (with ``num_envs``) for ``+exp=<experiment>``."""
    return dict(_module(system).matched_extra(experiment))


def unmatched() -> dict[str, dict[str, str]]:
    """Each baseline's settings that cannot be matched, and why (its ``UNMATCHED``)."""
    found = {}
    for system in BASELINES:
        try:
            found[system] = dict(_module(system).UNMATCHED)
        except Exception as error:  # an absent system is reported, not fatal
            found[system] = {"adapter": f"could not be loaded: {error!r}"}
    return found


def arguments(run: Run, task: str) -> dict[str, Any]:
    """``extra`` and ``num_envs`` of ``measure`` for a run on a task (its +exp=)."""
    if run.settings == "turnwise":
        return {"extra": {"overrides": list(run.overrides)} if run.overrides else {}}
    if run.settings == "defaults":
        return {"extra": {}}
    extra = matched_extra(run.system, task)
    return {"extra": extra, "num_envs": extra.pop("num_envs", None)}


@dataclass(frozen=True)
class Step:
    """One measurement: where its result goes, which run, and what ``measure`` gets."""

    section: Literal["throughput", "solve", "scaling"]
    run: str  # a label of RUNS
    case: Case
    repeat: int = 0
    layout: tuple[int, int] | None = None  # scaling: (rollout actors, envs per actor)


def longest_seconds(mode: Mode) -> float:
    """About the most a mode can take: every window and cap in full, plus each
    process's start-up (runs that solve early take less; a baseline's throughput
    window also waits for its warm-up iteration and its last whole one: up to ~30 s
    more for SB3's default 32K-step rollout)."""
    return sum(step.case.seconds + STARTUP_SECONDS for step in plan(mode))


def plan(mode: Mode) -> list[Step]:
    """Every measurement of a run, in order: each case's rounds alternate its runs."""
    steps = [
        Step(case.what, label, case, repeat)
        for case in mode.cases
        for repeat in range(case.repeats)
        for label in case.runs
    ]
    window = Case("throughput", "warehouse", ("turnwise",), mode.scaling_seconds)
    steps += [Step("scaling", "turnwise", window, layout=layout) for layout in mode.scaling]
    return steps


def take(step: Step, work_dir: Path) -> dict[str, Any]:
    """Measure one step; its row says which run, repeat and task it was."""
    case, run = step.case, RUNS[step.run]
    tags: dict[str, Any] = {"run": run.label, "repeat": step.repeat, "task": case.task}
    try:
        kwargs = arguments(run, case.task)
    except Exception as error:  # e.g. the adapter is not installed
        return {"system": run.system, **tags, "error": f"{type(error).__name__}: {error}"}
    if step.layout is not None:
        actors, envs = step.layout
        kwargs["extra"] = {"overrides": [f"actors.num_actors={actors}",
                                         f"actors.envs_per_actor={envs}"]}  # fmt: skip
        tags["actors_x_envs"] = f"{actors} actors x {envs} envs"
    result = measure(
        run.system, case.what, case.task, case.seconds, work_dir, case.budget, **kwargs
    )
    return {**result, **tags}


def plain_ceiling(seconds: float) -> dict[str, Any]:
    """One plain Warehouse-v0 env (what the baselines and turnwise-sync step) under a
    random policy, and the plain-env ceiling: that rate on each core the rollout actors
    have (``actors.num_actors``, at most the machine's cores)."""
    import numpy as np

    from turnwise.config import compose_config

    env = TASKS["warehouse"].make_env()
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, size=4096)
    steps, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        steps += len(actions)
    env.close()
    cores = min(compose_config(["+exp=warehouse"]).actors.num_actors, os.cpu_count() or 1)
    rate = steps / elapsed
    return {"env_steps_per_second": rate, "actor_cores": cores, "ceiling": rate * cores}


def run(mode_name: str, work_dir: Path) -> dict[str, Any]:
    """Every measurement of a mode; the results so far are kept in
    ``work_dir/results.json`` after each one (written atomically)."""
    mode = MODES[mode_name]
    steps = plan(mode)
    results: dict[str, Any] = {"throughput": [], "solve": [], "scaling": []}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, disable=not sys.stderr.isatty()) as progress:
        bar = progress.add_task("benchmarks", total=len(steps) + 2)
        progress.update(bar, description="ceiling")
        results["ceiling"] = components.ceiling(mode.ceiling_batches, mode.ceiling_seconds)
        results["plain_ceiling"] = plain_ceiling(max(mode.ceiling_seconds, 0.2))
        progress.advance(bar)
        progress.update(bar, description="transport")
        results["transport"] = components.transport(mode.transport_batches)
        progress.advance(bar)
        for step in steps:
            progress.update(bar, description=f"{step.section} {step.case.task}: {step.run}")
            results[step.section].append(take(step, work_dir))
            write_atomic(work_dir / "results.json", json.dumps(results, indent=1).encode())
            progress.advance(bar)
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep each measurement's output and results.json here "
                             "(default: a temporary directory, removed at the end)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.work_dir is not None and args.work_dir.exists() and not args.work_dir.is_dir():
        parser.error(f"--work-dir {args.work_dir}: exists and is not a directory")
    load_at_start = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="turnwise-suite-")
        if args.work_dir is None
        else contextlib.nullcontext(args.work_dir)
    ) as work:
        Path(work).mkdir(parents=True, exist_ok=True)
        results = run(args.mode, Path(work))
    experiments = dict.fromkeys(c.task for c in MODES[args.mode].cases)
    report = {
        "benchmark": "suite",
        "command": shlex.join(["python", "-m", "benchmarks", *argv]),
        "mode": args.mode,
        "mode_settings": asdict(MODES[args.mode]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": load_at_start,
        "machine": machine_info(**_versions()),  # its load average: at the end
        "runs": {label: asdict(r) for label, r in RUNS.items()},
        "matched": {exp: asdict(matched(exp)) for exp in experiments},
        "unmatched": unmatched(),
        **results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot = args.out_dir / "return_vs_wallclock.png"
    plot_curves(report, plot)
    report["plot"] = plot.name
    publish(report, render(report, plot), "suite", args.out_dir / "suite.json", args.markdown)
    return report


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = {"torch": "torch", "ray": "ray", "gymnasium": "gymnasium",
             "stable_baselines3": "stable-baselines3", "pyarrow": "pyarrow"}  # fmt: skip
    found = {}
    for key, dist in names.items():
        try:
            found[key] = version(dist)
        except PackageNotFoundError:
            found[key] = "not installed"
    return found
