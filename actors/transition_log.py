"""The transition log: every transition, as Parquet, one stream per rollout actor.

Layout under the run store (``store.uri``: the run directory by default, or
``s3://bucket/prefix``; apart from metrics and agent logs)::

    transitions/actor-003/incarnation-001.json     seeds and env version of one actor life
    transitions/actor-003/part-001-000042.parquet  one transition batch

Each actor writes its parts straight to the store, wherever it runs, and each part is
complete or absent after a crash: locally written to a temporary name and renamed into
place; on S3 one PUT of the whole part. A restarted actor starts a new incarnation,
never overwrites an earlier one's parts, and (locally) deletes the temporary files an
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

from turnwise.run_store import RunStore, node_record, open_run


class TransitionLog:
    """Appends one actor's batches as Parquet parts to the run store."""

    def __init__(self, run: str | Path | RunStore, actor_id: int, record: dict[str, Any]) -> None:
        self.store = open_run(run)
        self.stream = stream_name(actor_id)
        self.incarnation = next_incarnation(self.store, actor_id)
        self._sequence = 0
        if self.store.local_path is not None:
            self.directory = self.store.local_path / self.stream
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(self.directory, self.incarnation)
        record = {**record, **node_record()}  # which node this life of the stream ran on
        self.store.write(
            f"{self.stream}/incarnation-{self.incarnation:03d}.json",
            json.dumps(record, indent=2, sort_keys=True).encode(),
        )

    def append(self, batch: pa.RecordBatch) -> str:
        """Write ``batch`` as the stream's next part; returns its path (local) or URI."""
        name = f"{self.stream}/part-{self.incarnation:03d}-{self._sequence:06d}.parquet"
        table = pa.Table.from_batches([batch])
        if self.store.local:
            path = Path(self.store.path(name))
            tmp = path.with_name(f".{path.name}.tmp")
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)
            written = str(path)
        else:
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer, compression="zstd")
            written = self.store.write(name, buffer.getvalue().to_pybytes())
        self._sequence += 1
        return written


def stream_name(actor_id: int) -> str:
    return f"transitions/actor-{actor_id:03d}"


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


def next_incarnation(run: str | Path | RunStore, actor_id: int) -> int:
    return len(open_run(run).files(stream_name(actor_id), "incarnation-*.json"))


def part_names(run: str | Path | RunStore) -> list[str]:
    """Names (in the run store) of every complete part of the run's transition log."""
    store = open_run(run)
    return [
        name
        for name in store.files("transitions", "part-*.parquet", recursive=True)
        if name.count("/") == 2 and name.split("/")[1].startswith("actor-")
    ]


def part_files(run_dir: str | Path) -> Iterator[Path]:
    """The part files of a local run directory."""
    yield from sorted((Path(run_dir) / "transitions").glob("actor-*/part-*.parquet"))


def transitions(run: str | Path | RunStore) -> ds.Dataset:
    """All logged transitions of a run (a directory or a store URI) as one pyarrow
    dataset (complete parts only)."""
    store = open_run(run)
    paths = [store.path(name) for name in part_names(store)]
    return ds.dataset(paths, format="parquet", filesystem=store.fs)
