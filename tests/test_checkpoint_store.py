"""Checkpoint stores: a local directory and S3 (a real moto server) behave the same."""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from turnwise import checkpoint_store
from turnwise.checkpoint_store import (
    CHECKPOINT_MARKER,
    CheckpointStore,
    LocalCheckpointStore,
    S3CheckpointStore,
    open_store,
)

BUCKET = "bucket"
PREFIX = "runs/r1/checkpoints"
S3_URI = f"s3://{BUCKET}/{PREFIX}"
BAD_NAMES = ["", ".hidden", "..", "a/b", "../escape", "step 1", "step-1\n", "ckpt*"]


def name(step: int) -> str:
    return f"step-{step:010d}"


def files(step: int, *extra: str) -> dict[str, bytes]:
    """A checkpoint's files: the marker, a model and optimizer blob, and any `extra` files."""
    out = {f: f"{f}@{step}".encode() for f in ("model.pt", "optimizer.pt", *extra)}
    return out | {CHECKPOINT_MARKER: f'{{"step": {step}}}'.encode()}


class FailingFiles(Mapping[str, bytes]):
    """Files whose second blob fails to produce its bytes: a save that dies midway."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self._files = files

    def __getitem__(self, key: str) -> bytes:
        if key == "optimizer.pt":
            raise OSError("serialisation failed")
        return self._files[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


@dataclass
class Backend:
    store: CheckpointStore
    put_raw: Callable[[str, bytes], None]  # write bytes at a path under the store, bypassing it


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free local port, with the AWS env vars pointing at it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
                mp.delenv(key, raising=False)
            yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_client(s3_endpoint: str):
    """A boto3 client on an emptied moto server holding one fresh bucket."""
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST"))
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        root = tmp_path / "checkpoints"

        def put_local(rel: str, data: bytes) -> None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)

        return Backend(open_store(str(root)), put_local)
    client = request.getfixturevalue("s3_client")

    def put_s3(rel: str, data: bytes) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}", Body=data)

    return Backend(open_store(S3_URI), put_s3)


@pytest.fixture
def store(backend: Backend) -> CheckpointStore:
    return backend.store


def test_save_load_roundtrip(store: CheckpointStore) -> None:
    assert isinstance(store, CheckpointStore)
    assert store.list() == []
    uri = store.save(name(1), files(1))
    assert uri == store.uri_of(name(1)) == f"{store.uri}/{name(1)}"
    assert store.load(name(1)) == files(1)
    assert store.read(name(1), "model.pt") == b"model.pt@1"
    assert store.list() == [name(1)]


def test_list_shows_only_complete_checkpoints_sorted(backend: Backend) -> None:
    store = backend.store
    store.save(name(30), files(30))
    store.save(name(10), files(10))
    store.set_pointer("latest", name(30))
    backend.put_raw(f"{name(20)}/model.pt", b"marker never written")
    backend.put_raw(f".tmp-{name(40)}-abc123/{CHECKPOINT_MARKER}", b"{}")
    backend.put_raw(f".tmp-{name(40)}-abc123/model.pt", b"in flight")
    assert store.list() == [name(10), name(30)]
    for incomplete in (name(20), name(99)):
        with pytest.raises(FileNotFoundError, match=incomplete):
            store.load(incomplete)
        with pytest.raises(FileNotFoundError, match=incomplete):
            store.read(incomplete, "model.pt")


def test_overwrite_replaces_the_whole_file_set(store: CheckpointStore) -> None:
    store.save(name(1), files(1, "stale.bin"))
    store.save(name(1), files(2))
    assert store.load(name(1)) == files(2)
    assert store.list() == [name(1)]


def test_pointers(store: CheckpointStore) -> None:
    assert store.pointer("latest") is None
    store.set_pointer("latest", name(1))
    store.set_pointer("best", name(1))
    assert store.pointer("latest") == name(1)
    store.set_pointer("latest", name(2))
    assert (store.pointer("latest"), store.pointer("best")) == (name(2), name(1))
    assert store.list() == []  # pointers are not checkpoints


def test_delete(store: CheckpointStore) -> None:
    store.save(name(1), files(1))
    store.save(name(2), files(2))
    store.delete(name(1))
    assert store.list() == [name(2)]
    with pytest.raises(FileNotFoundError):
        store.load(name(1))
    store.delete(name(1))  # deleting what is gone is a no-op
    assert store.load(name(2)) == files(2)


def test_failed_save_leaves_no_checkpoint(store: CheckpointStore) -> None:
    store.save(name(1), files(1))
    with pytest.raises(OSError, match="serialisation failed"):
        store.save(name(2), FailingFiles(files(2)))
    assert store.list() == [name(1)]
    with pytest.raises(FileNotFoundError):
        store.load(name(2))


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_invalid_names_rejected(store: CheckpointStore, bad: str) -> None:
    calls = [
        lambda: store.save(bad, files(1)),
        lambda: store.load(bad),
        lambda: store.read(bad, "model.pt"),
        lambda: store.read(name(1), bad),
        lambda: store.set_pointer(bad, name(1)),
        lambda: store.set_pointer("latest", bad),
        lambda: store.pointer(bad),
        lambda: store.delete(bad),
        lambda: store.save(name(1), files(1) | {bad: b"x"}),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="invalid"):
            call()
    assert store.list() == []


def test_save_requires_the_marker(store: CheckpointStore) -> None:
    with pytest.raises(ValueError, match=re.escape(CHECKPOINT_MARKER)):
        store.save(name(1), {"model.pt": b"w"})
    assert store.list() == []


@pytest.mark.parametrize("fail_at", ["files", "rename"])
def test_local_failed_overwrite_keeps_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    store = LocalCheckpointStore(tmp_path)
    store.save(name(1), files(1))
    new: Mapping[str, bytes] = files(2)
    if fail_at == "files":
        new = FailingFiles(files(2))
    else:  # fail renaming the new directory in, after the old one was moved aside
        real_replace, renames_in = os.replace, []

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            if Path(dst).name == name(1):
                renames_in.append(src)
                if len(renames_in) == 1:  # the new dir; the rollback (2nd) must go through
                    raise OSError("rename failed")
            real_replace(src, dst)

        monkeypatch.setattr(checkpoint_store.os, "replace", replace)
    with pytest.raises(OSError, match="failed"):
        store.save(name(1), new)
    monkeypatch.undo()
    assert store.load(name(1)) == files(1)
    assert store.list() == [name(1)]
    assert [p.name for p in tmp_path.iterdir()] == [name(1)]  # no temp dirs left behind


def test_s3_interrupted_overwrite_is_incomplete_not_mixed(s3_client) -> None:
    store = open_store(S3_URI)
    store.save(name(1), files(1))
    with pytest.raises(OSError):
        store.save(name(1), FailingFiles(files(2)))
    assert store.list() == []
    with pytest.raises(FileNotFoundError):
        store.load(name(1))


def test_open_store_dispatch(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    for uri in (str(root), f"file://{root}"):
        store = open_store(uri)
        assert isinstance(store, LocalCheckpointStore)
        assert store.uri == str(root)
        assert store.list() == [] and store.pointer("latest") is None
    assert not root.exists()  # created on first save only
    s3 = open_store("s3://bucket/runs/r1/checkpoints/")
    assert isinstance(s3, S3CheckpointStore)
    assert (s3.bucket, s3.prefix, s3.uri) == ("bucket", PREFIX, S3_URI)
    assert s3.uri_of(name(1)) == f"{S3_URI}/{name(1)}"


@pytest.mark.parametrize(
    "uri", ["", "s3://", "s3:///runs/r1", "gs://bucket/runs", "http://host/x", "file://host/x"]
)
def test_open_store_rejects_bad_uris(uri: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(uri))):
        open_store(uri)
