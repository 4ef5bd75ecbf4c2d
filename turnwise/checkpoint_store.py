"""Checkpoint storage on a local directory or S3; a checkpoint is complete iff its marker exists."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

CHECKPOINT_MARKER = "manifest.json"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _check_name(name: str, what: str = "checkpoint name") -> str:
    """Return `name` if it is a valid checkpoint/pointer name, else raise ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid {what} {name!r}: use [A-Za-z0-9._-], not starting with '.'")
    return name


def _check_save(name: str, files: Mapping[str, bytes]) -> None:
    """Validate everything before the first write, so a ValueError means nothing was written."""
    _check_name(name)
    for filename in files:
        _check_name(filename, "filename")
    if CHECKPOINT_MARKER not in files:
        raise ValueError(f"checkpoint files must include the marker {CHECKPOINT_MARKER!r}")


def _missing(store: CheckpointStore, name: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"no complete checkpoint {name!r} at {store.uri_of(name)} (missing {CHECKPOINT_MARKER})"
    )


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live. Files in a checkpoint are flat: names follow the name rule."""

    uri: str

    def save(self, name: str, files: Mapping[str, bytes]) -> str: ...
    def load(self, name: str) -> dict[str, bytes]: ...
    def read(self, name: str, filename: str) -> bytes: ...
    def list(self) -> list[str]: ...
    def set_pointer(self, pointer: str, name: str) -> None: ...
    def pointer(self, pointer: str) -> str | None: ...
    def delete(self, name: str) -> None: ...
    def uri_of(self, name: str) -> str: ...


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _complete(path: Path) -> bool:
    return (path / CHECKPOINT_MARKER).is_file()


class LocalCheckpointStore:
    """Checkpoints as directories `<root>/<name>/`; the root is created on first write."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(root)))
        self.uri = str(self.root)

    def uri_of(self, name: str) -> str:
        return str(self.root / _check_name(name))

    def _tmp(self, name: str) -> Path:
        return self.root / f".tmp-{name}-{uuid.uuid4().hex}"

    def save(self, name: str, files: Mapping[str, bytes]) -> str:
        _check_save(name, files)
        target, tmp = self.root / name, self._tmp(name)
        tmp.mkdir(parents=True)
        try:
            for filename, data in files.items():
                if filename != CHECKPOINT_MARKER:
                    _write_synced(tmp / filename, data)
            _write_synced(tmp / CHECKPOINT_MARKER, files[CHECKPOINT_MARKER])
            _fsync_dir(tmp)
            self._swap_in(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        logger.info("saved checkpoint %s (%d files)", target, len(files))
        return str(target)

    def _swap_in(self, tmp: Path, target: Path) -> None:
        """Rename `tmp` to `target`; an existing target is moved aside first, then deleted."""
        if not target.exists():
            os.replace(tmp, target)
            return
        old = self._tmp(target.name)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def _complete_dir(self, name: str) -> Path:
        path = Path(self.uri_of(name))
        if not _complete(path):
            raise _missing(self, name)
        return path

    def load(self, name: str) -> dict[str, bytes]:
        path = self._complete_dir(name)
        return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}

    def read(self, name: str, filename: str) -> bytes:
        _check_name(filename, "filename")
        return (self._complete_dir(name) / filename).read_bytes()

    def list(self) -> list[str]:
        entries = self.root.iterdir() if self.root.is_dir() else []
        return sorted(p.name for p in entries if _NAME.fullmatch(p.name) and _complete(p))

    def set_pointer(self, pointer: str, name: str) -> None:
        _check_name(pointer, "pointer name")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp(pointer)
        _write_synced(tmp, _check_name(name).encode())
        os.replace(tmp, self.root / pointer)
        _fsync_dir(self.root)
        logger.info("pointer %s -> %s in %s", pointer, name, self.root)

    def pointer(self, pointer: str) -> str | None:
        path = self.root / _check_name(pointer, "pointer name")
        return path.read_text().strip() if path.is_file() else None

    def delete(self, name: str) -> None:
        path, aside = Path(self.uri_of(name)), self._tmp(name)
        if path.exists():  # move aside first: it vanishes from list() at once, then is removed
            os.replace(path, aside)
            shutil.rmtree(aside)
            logger.info("deleted checkpoint %s", path)


class S3CheckpointStore:
    """Checkpoints under `s3://<bucket>/<prefix>/<name>/`; the marker object is written last.

    S3 is reached through the run store's filesystem (`turnwise.run_store`, pyarrow's S3
    with the standard credential chain and `AWS_ENDPOINT_URL`); each file is one PUT. S3 has
    no atomic rename: overwriting an existing checkpoint first deletes its marker, so an
    interrupted overwrite leaves it incomplete (not listed), never a mix of old and new files.
    """

    def __init__(self, bucket: str, prefix: str = "") -> None:
        from turnwise.run_store import RunStore

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._store = RunStore(self.uri)

    def _dir(self, name: str) -> str:
        return _check_name(name) + "/"

    def uri_of(self, name: str) -> str:
        return self._store.uri_of(_check_name(name))

    def _get(self, key: str) -> bytes | None:
        return self._store.read_or_none(key)

    def save(self, name: str, files: Mapping[str, bytes]) -> str:
        _check_save(name, files)
        base = self._dir(name)
        marker = base + CHECKPOINT_MARKER
        old = set(self._store.files(base, recursive=True))
        self._store.delete(sorted(old & {marker}))  # an overwritten checkpoint is incomplete first
        written = {marker}
        for filename, data in files.items():
            if filename != CHECKPOINT_MARKER:
                key = base + filename
                self._store.write(key, data)
                written.add(key)
        self._store.delete(sorted(old - written))
        self._store.write(marker, files[CHECKPOINT_MARKER])
        logger.info("saved checkpoint %s (%d files)", self.uri_of(name), len(files))
        return self.uri_of(name)

    def _require_complete(self, name: str) -> str:
        base = self._dir(name)
        if self._get(base + CHECKPOINT_MARKER) is None:
            raise _missing(self, name)
        return base

    def load(self, name: str) -> dict[str, bytes]:
        base = self._require_complete(name)
        files = {key[len(base) :]: self._get(key) for key in self._store.files(base)}
        if any(data is None for data in files.values()):  # deleted while we were reading
            raise _missing(self, name)
        return files  # type: ignore[return-value]

    def read(self, name: str, filename: str) -> bytes:
        _check_name(filename, "filename")
        key = self._require_complete(name) + filename
        data = self._get(key)
        if data is None:
            raise FileNotFoundError(f"no file {filename!r} in checkpoint {self.uri_of(name)}")
        return data

    def list(self) -> list[str]:
        names = (key.split("/") for key in self._store.files(recursive=True))
        return sorted(p[0] for p in names if p[1:] == [CHECKPOINT_MARKER] and _NAME.fullmatch(p[0]))

    def set_pointer(self, pointer: str, name: str) -> None:
        self._store.write(_check_name(pointer, "pointer name"), _check_name(name).encode())
        logger.info("pointer %s -> %s in %s", pointer, name, self.uri)

    def pointer(self, pointer: str) -> str | None:
        data = self._get(_check_name(pointer, "pointer name"))
        return None if data is None else data.decode().strip()

    def delete(self, name: str) -> None:
        base = self._dir(name)
        keys = self._store.files(base, recursive=True)
        self._store.delete([k for k in keys if k == base + CHECKPOINT_MARKER])  # incomplete first
        with contextlib.suppress(FileNotFoundError):  # then the rest, the prefix itself
            self._store.fs.delete_dir(self._store.path(base))
        logger.info("deleted checkpoint %s (%d objects)", self.uri_of(name), len(keys))


def open_store(uri: str) -> CheckpointStore:
    """Open `s3://bucket/prefix`, `file:///path` or a plain path as a checkpoint store."""
    parts = urlsplit(uri)
    if parts.scheme == "s3" and parts.netloc:
        return S3CheckpointStore(parts.netloc, parts.path)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return LocalCheckpointStore(unquote(parts.path))
    if uri and not parts.scheme:
        return LocalCheckpointStore(uri)
    raise ValueError(
        f"invalid checkpoint store URI {uri!r}: use s3://bucket[/prefix], file:///path or a path"
    )
