"""The side-by-side benchmark: turnwise against RLlib PPO, SB3 PPO and the machine.

    python -m benchmarks [--mode quick|full]     (quick: ~10 minutes; full: ~30)

Five sections, measured in one run on one machine: (1) the ceiling (random-policy
batched env, forward pass alone); (2) sampling + learning throughput of each system
on Warehouse-v0 over a fixed wall-clock window; (3) time to solve (90% of the
oracle on Warehouse-v0's held-out seeds; eval return 450 on CartPole-v1) with a
time cap; (4) turnwise's scaling with rollout actors and envs per actor; (5) the
transport profile. Every system measurement runs in a fresh process
(``python -m benchmarks.systems``). Writes ``benchmarks/results/suite.json``, the
``suite`` section of BENCHMARKS.md and ``benchmarks/results/return_vs_wallclock.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import components
from benchmarks.report import BENCHMARKS_MD, REPO, RESULTS_DIR, machine_info, publish
from benchmarks.suite_report import plot_curves, render

log = logging.getLogger("benchmarks.suite")

SYSTEMS = ("turnwise", "rllib", "sb3")


@dataclass(frozen=True)
class SolveBudget:
    seconds: float
    env_steps: int
    eval_every: int


@dataclass(frozen=True)
class Mode:
    """How long each measurement of a mode runs."""

    throughput_seconds: float
    solve: dict[str, SolveBudget]  # task -> budget
    scaling: tuple[tuple[int, int], ...]  # (rollout actors, envs per actor)
    scaling_seconds: float
    ceiling_batches: tuple[int, ...]
    ceiling_seconds: float
    transport_batches: int
    extra: dict[str, dict[str, Any]]  # system -> settings.extra (tiny budgets need smaller steps)


SCALING = ((1, 128), (2, 128), (4, 128), (2, 1))
MODES = {
    "full": Mode(
        throughput_seconds=45,
        solve={
            "warehouse": SolveBudget(600, 10_000_000, 100_000),
            "cartpole": SolveBudget(300, 5_000_000, 25_000),
        },
        scaling=SCALING,
        scaling_seconds=20,
        ceiling_batches=(128, 1024, 4096),
        ceiling_seconds=1.0,
        transport_batches=10,
        extra={},
    ),
    "quick": Mode(
        throughput_seconds=15,
        solve={
            "warehouse": SolveBudget(60, 10_000_000, 100_000),
            "cartpole": SolveBudget(45, 5_000_000, 25_000),
        },
        scaling=SCALING,
        scaling_seconds=8,
        ceiling_batches=(128, 1024),
        ceiling_seconds=0.3,
        transport_batches=5,
        extra={},
    ),
    "tiny": Mode(  # the harness test: well-formed results, not timings
        throughput_seconds=3,
        solve={"warehouse": SolveBudget(10, 8_000, 4_000)},
        scaling=((1, 16), (2, 1)),
        scaling_seconds=2,
        ceiling_batches=(16,),
        ceiling_seconds=0.05,
        transport_batches=1,
        extra={},
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
    ``num_envs``: the parallel envs of RLlib and SB3 (``Settings.num_envs`` if None)."""
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
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3 * seconds + 600
    )
    if done.returncode != 0 or not out.exists():
        log.error("%s %s %s failed:\n%s", system, what, task, done.stderr[-3000:])
        return {"system": system, "task": task, "error": done.stderr[-3000:]}
    return json.loads(out.read_text())


def plan(mode: Mode) -> list[tuple[str, str, dict[str, Any]]]:
    """Every measurement of a run, in order: (results section, label, arguments of
    ``measure``)."""
    steps: list[tuple[str, str, dict[str, Any]]] = []
    for system in SYSTEMS:
        steps.append(
            (
                "throughput",
                f"throughput {system}",
                {"system": system, "what": "throughput", "task": "warehouse",
                 "seconds": mode.throughput_seconds, "extra": mode.extra.get(system)},
            )
        )  # fmt: skip
    for task, budget in mode.solve.items():
        for system in SYSTEMS:
            steps.append(
                (
                    "solve",
                    f"time to solve {task}: {system}",
                    {"system": system, "what": "solve", "task": task, "seconds": budget.seconds,
                     "budget": budget, "extra": mode.extra.get(system)},
                )
            )  # fmt: skip
    for actors, envs in mode.scaling:
        overrides = [f"actors.num_actors={actors}", f"actors.envs_per_actor={envs}"]
        steps.append(
            (
                "scaling",
                f"scaling {actors} actors x {envs} envs",
                {"system": "turnwise", "what": "throughput", "task": "warehouse",
                 "seconds": mode.scaling_seconds, "extra": {"overrides": overrides}},
            )
        )  # fmt: skip
    return steps


def run(mode_name: str, work_dir: Path) -> dict[str, Any]:
    mode = MODES[mode_name]
    steps = plan(mode)
    results: dict[str, Any] = {"throughput": [], "solve": [], "scaling": []}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, disable=not sys.stderr.isatty()) as progress:
        bar = progress.add_task("benchmarks", total=len(steps) + 2)
        progress.update(bar, description="ceiling")
        results["ceiling"] = components.ceiling(mode.ceiling_batches, mode.ceiling_seconds)
        progress.advance(bar)
        progress.update(bar, description="transport")
        results["transport"] = components.transport(mode.transport_batches)
        progress.advance(bar)
        for section, label, kwargs in steps:
            progress.update(bar, description=label)
            result = measure(**kwargs, work_dir=work_dir)
            if section == "scaling":
                result["actors_x_envs"] = label.removeprefix("scaling ")
            results[section].append(result)
            progress.advance(bar)
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="turnwise-suite-") as work:
        results = run(args.mode, Path(work))
    report = {
        "benchmark": "suite",
        "command": shlex.join(["python", "-m", "benchmarks", *argv]),
        "mode": args.mode,
        "mode_settings": asdict(MODES[args.mode]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(**_versions()),
        **results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot = args.out_dir / "return_vs_wallclock.png"
    plot_curves(report, plot)
    report["plot"] = plot.name
    publish(report, render(report, plot), "suite", args.out_dir / "suite.json", args.markdown)
    return report


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = {"torch": "torch", "ray": "ray", "gymnasium": "gymnasium",
             "stable_baselines3": "stable-baselines3", "pyarrow": "pyarrow"}  # fmt: skip
    return {key: version(dist) for key, dist in names.items()}
