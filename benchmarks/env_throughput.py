"""Raw env steps per second of Warehouse-v0, every implementation side by side in one run.

    python -m benchmarks.env_throughput [--quick] [--out benchmarks/results/env_throughput.json]

Measures the single env (``WarehouseEnv``, reset on episode end), Gymnasium's
``SyncVectorEnv`` of single envs, the batched ``WarehouseVectorEnv`` (both with
``SAME_STEP`` autoreset) under a uniformly random policy whose actions are drawn
in advance, so the policy costs nothing, and the batched env driven by the
vectorized oracle, whose short episodes make resets dominate (its timing includes
the oracle's own cost). Every env is built and reset first (untimed); then each
round warms up and times a fixed number of ``step()`` calls in every cell in turn,
three rounds, and each cell keeps its median rate. Full-mode
vector cells time whole multiples of the 100-step budget, so under the random
policy every env truncates, and resets, as often in each repeat.

Writes a JSON report (machine, versions, every repeat) and regenerates the section
between ``<!-- env_throughput:begin -->`` and ``<!-- env_throughput:end -->`` of
``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import logging
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import sims
from benchmarks import report as shared
from sims.warehouse import WarehouseEnv, WarehouseVectorEnv, oracle_actions

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "env_throughput.json"
DEFAULT_MARKDOWN = ROOT / "BENCHMARKS.md"
SECTION = "env_throughput"
BEGIN, END = shared.markers(SECTION)
SIZE = "small"
SEED = 0
REPEATS = 3

LABELS = {
    "single": "single env (WarehouseEnv)",
    "sync_vector": "SyncVectorEnv of single envs",
    "batched": "batched (WarehouseVectorEnv)",
    "batched_oracle": "batched, oracle policy (short episodes)",
}


@dataclass(frozen=True)
class Cell:
    """One measurement: an implementation, its batch size and the ``step()`` calls timed."""

    implementation: str  # a key of LABELS
    num_envs: int
    calls: int  # step() calls per timed repeat; env steps = calls * num_envs

    @property
    def env_steps(self) -> int:
        return self.calls * self.num_envs

    @property
    def warmup_calls(self) -> int:
        return max(1, self.calls // 10)


# (implementation, num_envs, calls in full mode, calls in quick mode or None to skip).
# Full mode: about 1 s per timed repeat on a 2-core x86 machine, 3-9 s per cell.
_PLAN: tuple[tuple[str, int, int, int | None], ...] = (
    ("single", 1, 10_000, 1_000),
    ("sync_vector", 16, 700, 100),
    ("sync_vector", 256, 100, None),
    ("batched", 16, 3_200, 600),
    ("batched", 256, 1_400, 200),
    ("batched", 1024, 600, None),
    ("batched", 4096, 300, None),
    ("batched_oracle", 1024, 200, 25),
)


def plan(quick: bool = False, calls: int | None = None) -> list[Cell]:
    """The cells of a full or quick run; ``calls`` overrides every cell's step budget."""
    cells = [
        Cell(impl, n, quick_calls if quick else full_calls)
        for impl, n, full_calls, quick_calls in _PLAN
        if not quick or quick_calls is not None
    ]
    return cells if calls is None else [replace(cell, calls=calls) for cell in cells]


# -- workloads: what one cell steps ---------------------------------------------------
class Workload(Protocol):
    def draw(self, calls: int) -> Any:
        """Everything the timed loop needs (pre-drawn actions), drawn untimed."""

    def play(self, drawn: Any) -> int:
        """The timed loop; returns how many episodes ended."""

    def close(self) -> None: ...


class SingleEnvWorkload:
    """One ``WarehouseEnv`` stepped in a Python loop, reset when an episode ends."""

    def __init__(self, num_envs: int, seed: int) -> None:
        self.env = WarehouseEnv(size=SIZE)
        self.env.reset(seed=seed)
        self.rng = np.random.default_rng(seed)

    def draw(self, calls: int) -> list[int]:
        return self.rng.integers(0, 6, size=calls).tolist()

    def play(self, drawn: list[int]) -> int:
        env, episodes = self.env, 0
        for action in drawn:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
                episodes += 1
        return episodes

    def close(self) -> None:
        self.env.close()


class VectorWorkload:
    """A vector env (``SyncVectorEnv`` or ``WarehouseVectorEnv``) under random actions."""

    def __init__(self, env: gymnasium.vector.VectorEnv, seed: int) -> None:
        self.env = env
        self.env.reset(seed=seed)
        self.rng = np.random.default_rng(seed)

    def draw(self, calls: int) -> np.ndarray:
        return self.rng.integers(0, 6, size=(calls, self.env.num_envs))

    def play(self, drawn: np.ndarray) -> int:
        step, episodes = self.env.step, 0
        for actions in drawn:
            _, _, terminated, truncated, _ = step(actions)
            episodes += np.count_nonzero(terminated | truncated)
        return int(episodes)

    def close(self) -> None:
        self.env.close()


class OracleWorkload(VectorWorkload):
    """The batched env driven by the vectorized oracle (computed inside the timed loop)."""

    def draw(self, calls: int) -> int:
        return calls

    def play(self, drawn: int) -> int:
        env, episodes = self.env, 0
        for _ in range(drawn):
            _, _, terminated, truncated, _ = env.step(oracle_actions(env))
            episodes += np.count_nonzero(terminated | truncated)
        return int(episodes)


def _sync_vector(num_envs: int, seed: int) -> Workload:
    env = SyncVectorEnv(
        [lambda: WarehouseEnv(size=SIZE) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    return VectorWorkload(env, seed)


WORKLOADS: dict[str, Callable[[int, int], Workload]] = {
    "single": SingleEnvWorkload,
    "sync_vector": _sync_vector,
    "batched": lambda n, seed: VectorWorkload(WarehouseVectorEnv(n, size=SIZE), seed),
    "batched_oracle": lambda n, seed: OracleWorkload(WarehouseVectorEnv(n, size=SIZE), seed),
}


# -- measuring ------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    cell: Cell
    seconds: tuple[float, ...]  # one per timed repeat
    episodes: int  # episodes ended over all timed repeats

    @property
    def rates(self) -> list[float]:
        return [self.cell.env_steps / s for s in self.seconds]

    @property
    def steps_per_second(self) -> float:
        return float(statistics.median(self.rates))

    @property
    def mean_episode_length(self) -> float | None:
        total = self.cell.env_steps * len(self.seconds)
        return total / self.episodes if self.episodes else None


def time_once(workload: Workload, cell: Cell) -> tuple[float, int]:
    """Warm up, then time ``cell.calls`` step() calls: (seconds, episodes ended)."""
    workload.play(workload.draw(cell.warmup_calls))
    drawn = workload.draw(cell.calls)
    gc.collect()
    start = time.perf_counter()
    episodes = workload.play(drawn)
    return time.perf_counter() - start, episodes


def run_cells(cells: Sequence[Cell], repeats: int, console: Console) -> list[Measurement]:
    """Build every cell's env (untimed), then time the cells round-robin, one repeat of
    each per round, so load that comes and goes on the machine hits all cells alike."""
    seconds: list[list[float]] = [[] for _ in cells]
    episodes = [0] * len(cells)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("building envs", total=len(cells) * repeats)
        workloads = [WORKLOADS[c.implementation](c.num_envs, SEED) for c in cells]
        try:
            for round_ in range(repeats):
                for i, (cell, workload) in enumerate(zip(cells, workloads, strict=True)):
                    progress.update(task, description=f"{round_ + 1}/{repeats} {_label(cell)}")
                    elapsed, ended = time_once(workload, cell)
                    seconds[i].append(elapsed)
                    episodes[i] += ended
                    progress.advance(task)
        finally:
            for workload in workloads:
                workload.close()
    results = [
        Measurement(c, tuple(s), e) for c, s, e in zip(cells, seconds, episodes, strict=True)
    ]
    for result in results:
        logger.info("%s: %s steps/s", _label(result.cell), f"{result.steps_per_second:,.0f}")
    return results


def _label(cell: Cell) -> str:
    return f"{LABELS[cell.implementation]}, {cell.num_envs} envs"


# -- report -----------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    return shared.machine_info(numpy=np.__version__, gymnasium=gymnasium.__version__)


def build_report(results: Sequence[Measurement], command: str, quick: bool) -> dict[str, Any]:
    single = next((r for r in results if r.cell.implementation == "single"), None)
    return {
        "benchmark": "env_throughput",
        "command": command,
        "mode": "quick" if quick else "full",
        "repeats": len(results[0].seconds) if results else 0,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "env": {"id": sims.WAREHOUSE_ID, "size": SIZE, "version": WarehouseEnv(size=SIZE).version},
        "seed": SEED,
        "results": [_result_row(r, single) for r in results],
    }


def _result_row(result: Measurement, single: Measurement | None) -> dict[str, Any]:
    cell = result.cell
    baseline = single.steps_per_second if single else None
    return {
        "implementation": cell.implementation,
        "label": LABELS[cell.implementation],
        "num_envs": cell.num_envs,
        "policy": "oracle" if cell.implementation == "batched_oracle" else "random",
        "env_steps_per_repeat": cell.env_steps,
        "warmup_calls": cell.warmup_calls,
        "seconds": list(result.seconds),
        "repeat_steps_per_second": result.rates,
        "steps_per_second": result.steps_per_second,
        "speedup_vs_single": result.steps_per_second / baseline if baseline else None,
        "mean_episode_length": result.mean_episode_length,
    }


# -- BENCHMARKS.md ------------------------------------------------------------------------
def markdown_table(report: dict[str, Any]) -> str:
    lines = [
        "| implementation | num_envs | steps/s | speed-up vs single env |",
        "|---|---:|---:|---:|",
    ]
    for row in report["results"]:
        speedup = row["speedup_vs_single"]
        lines.append(
            f"| {row['label']} | {row['num_envs']:,} | {row['steps_per_second']:,.0f} | "
            + ("n/a" if speedup is None else f"{speedup:.1f}x")
            + " |"
        )
    return "\n".join(lines)


def interpretation(report: dict[str, Any]) -> str:
    """One sentence read off the figures (best batched vs single, sync and oracle)."""
    rows = report["results"]

    def best(impl: str) -> dict[str, Any] | None:
        found = [r for r in rows if r["implementation"] == impl]
        return max(found, key=lambda r: r["steps_per_second"]) if found else None

    batched, sync, oracle = best("batched"), best("sync_vector"), best("batched_oracle")
    if batched is None or batched["speedup_vs_single"] is None:
        return "Without a single-env and a batched figure there is nothing to compare."
    sentence = (
        f"The batched env peaks at {batched['speedup_vs_single']:.0f}x the single env "
        f"({batched['num_envs']:,} envs) because each step() is a few NumPy calls over the "
        "whole batch"
    )
    if sync is not None:
        sentence += (
            f", while SyncVectorEnv sits at {sync['speedup_vs_single']:.1f}x as it still makes "
            "one Python step per env, plus merging their infos"
        )
    if oracle is not None and oracle["mean_episode_length"]:
        sentence += (
            f"; with the oracle's {oracle['mean_episode_length']:.0f}-step episodes it drops "
            f"to {oracle['speedup_vs_single']:.0f}x at {oracle['num_envs']:,} envs, as every "
            "reset draws a new shift in per-env Python"
        )
    return sentence + "."


def render_section(report: dict[str, Any]) -> str:
    m, env = report["machine"], report["env"]
    return "\n".join(
        [
            BEGIN,
            f"## Env throughput: {env['id']} ({env['size']})",
            "",
            f"Raw env steps per second: each row is the median of {report['repeats']} timed "
            "repeats, taken",
            "round-robin over the rows after a warm-up. Random rows: a uniformly random policy",
            "with actions drawn in advance (the policy costs nothing); the oracle row includes",
            "the cost of `oracle_actions`. Produced by:",
            "",
            "```",
            report["command"],
            "```",
            "",
            f"- Machine: {m['cpu_model']}, {m['cpu_count']} logical CPUs, {m['platform']}"
            + _load_note(m.get("load_average")),
            f"- Software: Python {m['python']}, NumPy {m['numpy']}, Gymnasium {m['gymnasium']}",
            f"- Simulator: `{env['version']}`",
            f"- Date: {report['date']} ({report['mode']} mode)",
            "",
            markdown_table(report),
            "",
            interpretation(report),
            END,
        ]
    )


def _load_note(load: list[float] | None) -> str:
    if not load:
        return ""
    return f" (load average {' / '.join(f'{x:.2f}' for x in load)} after the run)"


def update_markdown(path: Path, section: str) -> None:
    """Regenerate this benchmark's section of ``path``, keeping everything else."""
    shared.update_section(path, SECTION, section)


# -- command line -------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.env_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer cells, <1 s each")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument(
        "--markdown", type=Path, default=DEFAULT_MARKDOWN, help="file whose section to regenerate"
    )
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed repeats per cell")
    parser.add_argument(
        "--calls", type=int, help="step() calls per repeat for every cell (smoke tests only)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON report and the Markdown section; return the report."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    console = console or Console(stderr=True)
    command = shlex.join(["python", "-m", "benchmarks.env_throughput", *argv])
    results = run_cells(plan(args.quick, args.calls), args.repeats, console)
    report = build_report(results, command, args.quick)
    shared.write_json(report, args.out)
    update_markdown(args.markdown, render_section(report))
    logger.info("wrote %s and the env_throughput section of %s", args.out, args.markdown)
    print(markdown_table(report))
    return report


if __name__ == "__main__":
    stderr = Console(stderr=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=stderr, show_path=False)],
    )
    main(console=stderr)
