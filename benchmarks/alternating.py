"""What the benchmarks that alternate capped time-to-solve runs share (``continuous``,
``memory``): their command line, the medians and ranges of a set of runs, and the
report they publish.

    python -m benchmarks.continuous [--repeats 2] [--seconds 240] [--out-dir D] [--markdown F]

A run is a ``benchmarks.suite.measure`` record of a ``solve`` measurement (its
``curve`` of evaluated points, ``solved`` or None, ``error`` if it failed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import BENCHMARKS_MD, RESULTS_DIR, load_average, machine_info, publish

Runs = list[dict[str, Any]]


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (``300_000`` allowed)."""
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """Median, min and max; None for no values."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cell(values: dict[str, float] | None, fmt: str) -> str:
    """A table cell: ``median (min to max)``, the median alone when all agree, — for none."""
    if values is None:
        return "—"
    median, low, high = (format(values[k], fmt) for k in ("median", "min", "max"))
    return median if low == high else f"{median} ({low} to {high})"


def rate(result: dict[str, Any]) -> float | None:
    """Env steps per second of training time, up to the run's last evaluation."""
    last = (result.get("curve") or [None])[-1]
    return last["env_steps"] / last["seconds"] if last and last["seconds"] > 0 else None


def solve_summary(runs: Runs) -> dict[str, Any]:
    """What every alternating benchmark reports of one system's runs: how many solved,
    seconds and env steps to solve (solved runs only), env steps/s, the failures."""
    solved = [r["solved"] for r in runs if r.get("solved")]
    return {
        "runs": len(runs),
        "solved": len(solved),
        "seconds": spread([s["seconds"] for s in solved]),
        "env_steps": spread([s["env_steps"] for s in solved]),
        "env_steps_per_second": spread([x for r in runs if (x := rate(r))]),
        "errors": [r["error"][-300:] for r in runs if "error" in r],
    }


def main(
    name: str,
    argv: Sequence[str] | None,
    run: Callable[[int, float, Path], Runs],
    fields: Callable[[Runs], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """``python -m benchmarks.<name>``: ``run(repeats, seconds, work_dir)``, then a report
    of the runs, ``fields(runs)`` and the machine, published as ``name``'s JSON file and
    BENCHMARKS.md section (``render(report)``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}")
    parser.add_argument("--repeats", type=positive_int, default=2, help="runs per system")
    parser.add_argument("--seconds", type=float, default=240.0, help="time cap per run")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args(argv)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix=f"turnwise-{name}-") as work:
        runs = run(args.repeats, args.seconds, Path(work))
    report = {
        "benchmark": name,
        "command": shlex.join(["python", "-m", f"benchmarks.{name}", *argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load_average_end": load_average(),
        "repeats": args.repeats,
        "seconds": args.seconds,
        **fields(runs),
        "runs": runs,
    }
    publish(report, render(report), name, args.out_dir / f"{name}.json", args.markdown)
    return report
