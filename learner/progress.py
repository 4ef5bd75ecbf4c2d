"""Console progress and the run's metrics log (one JSON row per update)."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich import get_console
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from turnwise.run_store import RecordFile, RunStore
from turnwise.schema import column_numpy

log = logging.getLogger(__name__)

PLAIN_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's own


class EpisodeStats:
    """Returns and lengths of the most recently finished training episodes."""

    def __init__(self, window: int = 200) -> None:
        self.returns: deque[float] = deque(maxlen=window)
        self.lengths: deque[int] = deque(maxlen=window)
        self.episodes = 0

    def add(self, batch: pa.RecordBatch) -> int:
        """Record the episodes that ended in ``batch``; return how many."""
        done = column_numpy(batch, "terminated") | column_numpy(batch, "truncated")
        returns = column_numpy(batch, "episode_return")[done]
        lengths = column_numpy(batch, "step")[done] + 1
        self.returns.extend(returns.tolist())
        self.lengths.extend(lengths.tolist())
        self.episodes += int(done.sum())
        return int(done.sum())

    def summary(self) -> dict[str, float]:
        if not self.returns:
            return {"train_return": float("nan"), "episode_length": float("nan")}
        return {
            "train_return": float(np.mean(self.returns)),
            "train_return_std": float(np.std(self.returns)),
            "episode_length": float(np.mean(self.lengths)),
        }


class MetricsLog:
    """Appends JSON rows to RUN_DIR/metrics.jsonl, flushed row by row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def trim_metrics(path: Path | RecordFile, env_steps: int) -> int:
    """Cut a metrics log (a file, or the run store's record) back to a resumed
    checkpoint's ``env_steps``: drop torn lines (a crash mid-write) and the rows past it
    (the stretch the resumed run redoes), so env steps stay monotone and the next row
    starts a line. Rewritten atomically only when something changes; returns the number
    of lines dropped."""
    if not isinstance(path, RecordFile):
        path = RecordFile(RunStore(Path(path).parent), Path(path).name)
    text = path.text()
    lines = text.splitlines()
    kept = [line for line in lines if _row_within(line, env_steps)]
    if len(kept) == len(lines) and (not text or text.endswith("\n")):
        return 0
    path.replace("".join(line + "\n" for line in kept))
    dropped = len(lines) - len(kept)
    log.info("metrics log cut back to %d env steps (%d lines dropped)", env_steps, dropped)
    return dropped


def _row_within(line: str, env_steps: int) -> bool:
    """``line`` is a whole row at or before ``env_steps``."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and row.get("env_steps", 0) <= env_steps


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics log; a torn last line (a crash mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping a torn line in %s", path)
    return rows


class ConsoleLogHandler(RichHandler):
    """Log records on the rich console the progress bar uses (so the two never collide):
    rich's rendering on a terminal; elsewhere (a pipe, a file, a log collector) one plain
    unwrapped line per record in ``plain_format``. Hydra installs it (conf/config.yaml)."""

    def __init__(self, plain_format: str = PLAIN_FORMAT, **options: Any) -> None:
        options = {"show_time": False, "show_path": False, **options}
        super().__init__(**options)
        self.plain = logging.Formatter(plain_format)

    def emit(self, record: logging.LogRecord) -> None:
        if self.console.is_terminal:
            super().emit(record)
            return
        try:
            text = self.plain.format(record)
            self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
        except Exception:  # logging never raises into the caller
            self.handleError(record)


def log_console() -> Console:
    """The console of the root logger's rich handler (the one log records go through),
    else rich's global console."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            return handler.console
    return get_console()


def evaluation_line(row: dict[str, Any]) -> str:
    """One console line per evaluation: how good the policy is, at 80 columns.

    >>> evaluation_line({"env_steps": 200704, "fraction_of_baseline": 0.42,
    ...     "baseline": "oracle", "success_rate": 0.31, "action_entropy": 1.21,
    ...     "state_coverage": 0.18, "eval_return": 12.3})
    'eval 200,704: 42% of oracle, success 31%, entropy 1.21, coverage 18%'
    """
    parts = [evaluation_score(row)]
    if row.get("success_rate") is not None:
        parts.append(f"success {row['success_rate']:.0%}")
    if row.get("action_entropy") is not None:
        parts.append(f"entropy {row['action_entropy']:.2f}")
    if row.get("state_coverage") is not None:
        parts.append(f"coverage {row['state_coverage']:.0%}")
    return f"eval {row['env_steps']:,}: " + ", ".join(parts)


def evaluation_score(row: dict[str, Any]) -> str:
    """The fraction of the baseline where there is one, else the evaluation return."""
    fraction = row.get("fraction_of_baseline")
    if fraction is None:
        return f"return {row['eval_return']:.2f}"
    name = "oracle" if row.get("baseline") == "oracle" else "baseline"
    return f"{fraction:.0%} of {name}"


def final_line(env_steps: int, train_return: float, last: dict[str, Any] | None) -> str:
    """The run's last console line: what it did and how good its last evaluation was.

    >>> final_line(401408, 32.91, {"env_steps": 401408, "fraction_of_baseline": 0.88,
    ...     "baseline": "oracle", "eval_return": 29.13})
    'done: 401,408 env steps, last eval 401,408: 88% of oracle (return 29.13), train return 32.91'
    """
    if last is None:
        evaluated = "no evaluation"
    else:
        score = evaluation_score(last)
        if last.get("fraction_of_baseline") is not None:
            score += f" (return {last['eval_return']:.2f})"
        evaluated = f"last eval {last['env_steps']:,}: {score}"
    return f"done: {env_steps:,} env steps, {evaluated}, train return {train_return:.2f}"


class ConsoleProgress:
    """A rich progress bar on env steps, on the console log records go through (they
    print above it); plain log lines every ``every_s`` when disabled or not a terminal."""

    def __init__(self, total: int, start: int, enabled: bool, every_s: float = 10.0) -> None:
        self._progress = None
        self._every_s, self._last = every_s, 0.0
        console = log_console()
        if enabled and console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(bar_width=None),  # what the text leaves of the width
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console,
                expand=True,
            )
            self._task = self._progress.add_task("train", total=total, completed=start, status="")
            self._progress.start()

    def update(self, env_steps: int, row: dict[str, Any]) -> None:
        speed, train_return = row["env_steps_per_second"], row["train_return"]
        if self._progress is not None:  # short enough for 80 columns
            status = f"{speed:,.0f}/s  return {train_return:.2f}"
            self._progress.update(self._task, completed=env_steps, status=status)
        elif time.monotonic() - self._last > self._every_s:
            self._last = time.monotonic()
            log.info(
                "%s env steps  %s steps/s  return %.2f  lag %.1f",
                f"{env_steps:,}",
                f"{speed:,.0f}",
                train_return,
                row["policy_lag"],
            )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
