"""TensorBoard scalars of a run (``monitoring.tensorboard=true``; off by default).

Every ``metrics.jsonl`` row becomes ``train/<key>`` scalars and every evaluation row
``eval/<key>`` scalars, all at the row's ``env_steps`` (the x-axis RL users compare
runs on), written by PyTorch's ``SummaryWriter`` to ``RUN_DIR/tensorboard`` (or
``monitoring.tensorboard_dir``). Watch a run with
``tensorboard --logdir RUN_DIR/tensorboard``. Counters and non-numeric fields (ids,
names, flags) are left out: they are in the JSONL files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SKIPPED = {"env_steps", "updates", "policy_version", "time_s", "created", "seed"}


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a row worth a curve (booleans and the step itself left out)."""
    out = {}
    for key, value in row.items():
        if key in SKIPPED or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class TensorBoardLog:
    """Training and evaluation rows as TensorBoard scalars, one event file per run."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # late: only when asked for

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))

    def update(self, row: dict[str, Any]) -> None:
        self._write("train", row)

    def evaluation(self, row: dict[str, Any]) -> None:
        self._write("eval", row)

    def _write(self, prefix: str, row: dict[str, Any]) -> None:
        step = int(row["env_steps"])
        for key, value in scalars(row).items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files under ``log_dir``: [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
