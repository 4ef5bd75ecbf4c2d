"""The run store: every record of a run under one URI, a local directory or S3.

``RunStore(uri)`` opens ``s3://bucket/prefix``, ``file:///path`` or a plain path through
``pyarrow.fs`` (S3 with the AWS SDK's standard credential chain; ``AWS_ENDPOINT_URL``
reaches MinIO or moto). Names inside a store are relative, ``/``-separated paths
(``transitions/actor-003/part-001-000042.parquet``). What a run puts there::

    run.json, config.json       the run record and its resolved configuration
    metrics.jsonl               one row per learner update (the driver)
    evaluations.jsonl, alerts.jsonl   the evaluator's table and its alerts
    transitions/actor-NNN/      the transition log, written by each rollout actor
    checkpoints/                the checkpoint store (unless ``checkpoint.uri`` names another)

Every write is complete or absent. Locally: a temporary name in the same directory,
fsync, then a rename. On S3: one PUT of the whole object (an object appears only once
its upload completes); where several objects make one thing (a checkpoint) the marker is
written last. Nothing is ever appended in place on S3 (:class:`RecordFile`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

log = logging.getLogger(__name__)


def check_uri(uri: str) -> str | None:
    """What is wrong with store URI ``uri`` (None where it is usable): ``s3://bucket[/prefix]``,
    ``file:///path`` or a path; an empty URI means the default and is valid."""
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        return None if parts.netloc else "an s3:// URI names its bucket: s3://bucket[/prefix]"
    if parts.scheme == "file":
        ok = parts.netloc in ("", "localhost") and parts.path
        return None if ok else "a file URI is file:///absolute/path"
    if len(parts.scheme) > 1:  # a one-letter "scheme" is a Windows drive
        return f"scheme {parts.scheme!r} is not supported: use s3://, file:// or a path"
    return None


def is_s3(uri: str | os.PathLike[str]) -> bool:
    return str(uri).startswith("s3://")


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@cache
def _s3(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    """One S3 filesystem per process and endpoint (it holds the SDK's client)."""
    options: dict[str, Any] = {"region": region or "us-east-1"}
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        options.update(endpoint_override=host or endpoint, scheme=scheme or "https")
    return pafs.S3FileSystem(**options)


def s3_filesystem() -> pafs.S3FileSystem:
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    return _s3(_endpoint(), region)


class RunStore:
    """A run's records under one URI. Picklable (as its URI): Ray actors get one."""

    def __init__(self, uri: str | os.PathLike[str]) -> None:
        text = str(uri)
        problem = check_uri(text) if text else "an empty URI"
        if problem:
            raise ValueError(f"invalid run store URI {text!r}: {problem}")
        parts = urlsplit(text)
        self.local = parts.scheme != "s3"
        if self.local:
            path = unquote(parts.path) if parts.scheme == "file" else text
            self.root = os.path.abspath(os.path.expanduser(path))
            self.uri = self.root
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
        else:
            self.root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
            self.uri = f"s3://{self.root}"
            self.fs = s3_filesystem()

    def __reduce__(self) -> tuple[Any, ...]:
        return (RunStore, (self.uri,))

    def __repr__(self) -> str:
        return f"RunStore({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    def path(self, name: str = "") -> str:
        """The filesystem path of ``name`` (local: absolute; S3: ``bucket/key``)."""
        return f"{self.root}/{name.strip('/')}" if name.strip("/") else self.root

    def uri_of(self, name: str = "") -> str:
        return self.path(name) if self.local else f"s3://{self.path(name)}"

    def sub(self, name: str) -> RunStore:
        """The store under ``name`` (a run's ``checkpoints``, say)."""
        return RunStore(self.uri_of(name))

    @property
    def local_path(self) -> Path | None:
        """The directory of a local store; None on S3."""
        return Path(self.root) if self.local else None

    # -- objects ------------------------------------------------------------------
    def write(self, name: str, data: bytes) -> str:
        """Write ``name`` whole: readers see the old version or the new, never a part."""
        target = self.path(name)
        if self.local:
            write_atomic(Path(target), data)
        else:
            with self.fs.open_output_stream(target) as stream:  # one PUT on close
                stream.write(data)
        return self.uri_of(name)

    def read(self, name: str) -> bytes:
        """The bytes of ``name``; FileNotFoundError naming its URI if there is none."""
        try:
            with self.fs.open_input_stream(self.path(name)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"no {self.uri_of(name)}") from None
        except OSError as error:  # pyarrow reports a missing S3 key this way on some paths
            if self.fs.get_file_info(self.path(name)).type == pafs.FileType.NotFound:
                raise FileNotFoundError(f"no {self.uri_of(name)}") from None
            raise error

    def read_or_none(self, name: str) -> bytes | None:
        try:
            return self.read(name)
        except FileNotFoundError:
            return None

    def read_json(self, name: str) -> Any:
        return json.loads(self.read(name))

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def is_dir(self, name: str = "") -> bool:
        """A local directory, or an S3 prefix holding at least one object."""
        if self.local:
            return Path(self.path(name)).is_dir()
        return bool(self.files(name, recursive=True, limit=1))

    def files(
        self, directory: str = "", pattern: str = "*", recursive: bool = False, limit: int = 0
    ) -> list[str]:
        """Sorted names (relative to the store) of the files under ``directory`` whose
        last component matches ``pattern`` (``fnmatch``); ``[]`` where there are none."""
        base = self.path(directory)
        selector = pafs.FileSelector(base, allow_not_found=True, recursive=recursive)
        try:
            infos = self.fs.get_file_info(selector)
        except (FileNotFoundError, NotADirectoryError):
            return []
        skip = len(self.root) + 1
        names = sorted(
            info.path[skip:]
            for info in infos
            if info.type == pafs.FileType.File and fnmatch(info.base_name, pattern)
        )
        return names[:limit] if limit else names

    def delete(self, names: Iterable[str]) -> None:
        """Delete ``names``; those already gone are skipped."""
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self.path(name))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def node_record() -> dict[str, Any]:
    """Where the calling process runs, for the records it writes: its Ray node id (None
    outside Ray), host and pid."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:  # a simulator image without Ray
        node = None
    return {"node_id": node, "host": socket.gethostname(), "pid": os.getpid()}


def open_run(target: str | os.PathLike[str] | RunStore) -> RunStore:
    """A :class:`RunStore` for a run's URI or directory (or the store itself)."""
    return target if isinstance(target, RunStore) else RunStore(target)


def parse_rows(text: str, where: str) -> list[dict[str, Any]]:
    """The JSON rows of a JSONL text; a line torn by a crash is skipped (logged)."""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping a torn line in %s", where)
    return rows


class RecordFile:
    """An append-only JSONL record of a run (``metrics.jsonl``, ``evaluations.jsonl``,
    ``alerts.jsonl``), written by one process.

    Locally each row is appended to the file and flushed, as a local log always was (a
    crash tears at most the last line, which readers skip). An S3 object cannot be
    appended to, so there the writer holds the whole file, starting from the object as it
    is, and PUTs it whole (one atomic object) when ``flush_interval_s`` has passed since
    the last upload, on :meth:`flush` and on :meth:`close`; with 0, after every row. A
    reader sees the complete file of some moment, at most ``flush_interval_s`` behind; a
    writer killed loses at most that stretch. One writer per file: two processes
    appending to the same S3 record would each upload only their own view.
    """

    def __init__(
        self,
        store: RunStore,
        name: str,
        flush_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.name, self.interval, self._clock = store, name, flush_interval_s, clock
        self._text: str | None = None  # S3: the file's text, loaded on first use
        self._dirty = False
        self._uploaded = clock()

    @property
    def uri(self) -> str:
        return self.store.uri_of(self.name)

    def _load(self) -> str:
        if self._text is None:
            data = self.store.read_or_none(self.name)
            self._text = "" if data is None else data.decode("utf-8")
        return self._text

    def text(self) -> str:
        if self.store.local:
            data = self.store.read_or_none(self.name)
            return "" if data is None else data.decode("utf-8")
        return self._load()

    def rows(self) -> list[dict[str, Any]]:
        return parse_rows(self.text(), self.uri)

    def append(self, row: dict[str, Any]) -> None:
        """One row; after a line torn by a crash it starts a new line (never glued on)."""
        line = json.dumps(row, sort_keys=True) + "\n"
        if self.store.local:
            path = Path(self.store.path(self.name))
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line if _ends_a_line(path) else "\n" + line)
            return
        text = self._load()
        self._text = text + (line if not text or text.endswith("\n") else "\n" + line)
        self._dirty = True
        if self._clock() - self._uploaded >= self.interval:
            self.flush()

    def replace(self, text: str) -> None:
        """The whole file, written atomically at once (a resumed run's trimmed log)."""
        self.store.write(self.name, text.encode("utf-8"))
        if not self.store.local:
            self._text, self._dirty, self._uploaded = text, False, self._clock()

    def flush(self) -> None:
        if self._dirty and self._text is not None:
            self.store.write(self.name, self._text.encode("utf-8"))
            self._dirty, self._uploaded = False, self._clock()

    def close(self) -> None:
        self.flush()


def _ends_a_line(path: Path) -> bool:
    """``path`` is absent, empty or ends with a newline (not with a torn line)."""
    try:
        with open(path, "rb") as handle:
            if handle.seek(0, 2) == 0:
                return True
            handle.seek(-1, 2)
            return handle.read(1) == b"\n"
    except FileNotFoundError:
        return True
