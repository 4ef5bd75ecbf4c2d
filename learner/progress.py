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
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from actors.transition_log import write_atomic
from turnwise.schema import column_numpy

log = logging.getLogger(__name__)


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


def trim_metrics(path: Path, env_steps: int) -> int:
    """Cut a metrics log back to a resumed checkpoint's ``env_steps``: drop torn lines
    (a crash mid-write) and the rows past it (the stretch the resumed run redoes), so
    env steps stay monotone and the next row starts a line. Rewritten atomically only
    when something changes; returns the number of lines dropped."""
    if not path.exists():
        return 0
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    kept = [line for line in lines if _row_within(line, env_steps)]
    if len(kept) == len(lines) and (not text or text.endswith("\n")):
        return 0
    write_atomic(path, "".join(line + "\n" for line in kept).encode())
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


class ConsoleProgress:
    """A rich progress bar on env steps; plain log lines when disabled or not a TTY."""

    def __init__(self, total: int, start: int, enabled: bool, every_s: float = 10.0) -> None:
        self._progress = None
        self._every_s, self._last = every_s, 0.0
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} env steps"),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
            )
            self._task = self._progress.add_task("train", total=total, completed=start, status="")
            self._progress.start()

    def update(self, env_steps: int, row: dict[str, Any]) -> None:
        status = (
            f"{row['env_steps_per_second']:,.0f} steps/s  return {row['train_return']:.2f}  "
            f"lag {row['policy_lag']:.1f}"
        )
        if self._progress is not None:
            self._progress.update(self._task, completed=env_steps, status=status)
        elif time.monotonic() - self._last > self._every_s:
            self._last = time.monotonic()
            log.info("%s env steps  %s", f"{env_steps:,}", status)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
