"""The transition log: every transition, as Parquet, one stream per rollout actor.

Layout under the run directory (apart from metrics and agent logs)::

    transitions/actor-003/incarnation-001.json     seeds and env version of one actor life
    transitions/actor-003/part-001-000042.parquet  one transition batch

Each part is written to a temporary name and renamed into place, so after a crash
a part is either complete or absent. A restarted actor starts a new incarnation,
never overwrites an earlier one's parts, and deletes the temporary files an
earlier life of its stream left when it was killed mid-write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class TransitionLog:
    """Appends one actor's batches as Parquet parts."""

    def __init__(self, run_dir: str | Path, actor_id: int, record: dict[str, Any]) -> None:
        self.directory = Path(run_dir) / "transitions" / f"actor-{actor_id:03d}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.incarnation = len(list(self.directory.glob("incarnation-*.json")))
        self._sequence = 0
        remove_stale_tmp(self.directory, self.incarnation)
        write_atomic(
            self.directory / f"incarnation-{self.incarnation:03d}.json",
            json.dumps(record, indent=2, sort_keys=True).encode(),
        )

    def append(self, batch: pa.RecordBatch) -> Path:
        path = self.directory / f"part-{self.incarnation:03d}-{self._sequence:06d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pa.Table.from_batches([batch]), tmp, compression="zstd")
        os.replace(tmp, path)
        self._sequence += 1
        return path


def remove_stale_tmp(directory: Path, incarnation: int) -> list[Path]:
    """Delete the temporary files that earlier lives of a stream left when killed
    mid-write (``.part-III-*.parquet.tmp`` of incarnations before ``incarnation``,
    ``.incarnation-*.json.tmp-PID``); returns them."""
    stale = [
        path
        for path in directory.glob(".part-*.parquet.tmp")
        if _incarnation_of(path) is not None and _incarnation_of(path) < incarnation
    ]
    stale += directory.glob(".incarnation-*.json.tmp-*")
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _incarnation_of(tmp: Path) -> int | None:
    """III of ``.part-III-SSSSSS.parquet.tmp``."""
    number = tmp.name.removeprefix(".part-").split("-", 1)[0]
    return int(number) if number.isdigit() else None


def next_incarnation(run_dir: str | Path, actor_id: int) -> int:
    directory = Path(run_dir) / "transitions" / f"actor-{actor_id:03d}"
    return len(list(directory.glob("incarnation-*.json")))


def part_files(run_dir: str | Path) -> Iterator[Path]:
    yield from sorted((Path(run_dir) / "transitions").glob("actor-*/part-*.parquet"))


def transitions(run_dir: str | Path) -> ds.Dataset:
    """All logged transitions of a run as one pyarrow dataset (complete parts only)."""
    return ds.dataset([str(p) for p in part_files(run_dir)], format="parquet")
