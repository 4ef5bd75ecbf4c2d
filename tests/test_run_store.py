"""The run store: a local directory and S3 (a real moto server) hold a run's records alike."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from actors.transition_log import TransitionLog, next_incarnation, part_names, transitions
from learner.progress import trim_metrics
from turnwise.run_store import RecordFile, RunStore, check_uri

S3_RUN = "s3://turnwise/runs/store-test"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RunStore:
    if request.param == "local":
        return RunStore(tmp_path / "run")
    request.getfixturevalue("s3_endpoint")
    store = RunStore(f"{S3_RUN}/{tmp_path.name}")  # a prefix of its own per test
    assert store.files(recursive=True) == []
    return store


def test_writes_are_whole_and_listed_by_name(store: RunStore) -> None:
    assert store.read_or_none("config.json") is None and not store.exists("config.json")
    store.write("config.json", b"{}")
    store.write("transitions/actor-000/part-000-000000.parquet", b"p")
    store.write("transitions/actor-000/incarnation-000.json", b"{}")
    assert store.read("config.json") == b"{}" and store.exists("config.json")
    assert store.files() == ["config.json"]
    assert store.files("transitions/actor-000", "part-*") == [
        "transitions/actor-000/part-000-000000.parquet"
    ]
    assert len(store.files(recursive=True)) == 3 and store.is_dir("transitions")
    store.write("config.json", b'{"a": 1}')  # replaced whole
    assert store.read_json("config.json") == {"a": 1}
    store.delete(["config.json", "never-was"])
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        store.read("config.json")
    if store.local_path is not None:  # no temporary file is left behind
        assert not [p for p in store.local_path.rglob(".*") if p.is_file()]


def test_a_store_travels_as_its_uri(store: RunStore) -> None:
    copy = pickle.loads(pickle.dumps(store))
    assert copy.uri == store.uri and copy.local == store.local
    assert store.sub("checkpoints").uri == store.uri_of("checkpoints")


@pytest.mark.parametrize(
    ("uri", "ok"),
    [("", True), ("s3://b/p", True), ("s3://", False), ("file:///x", True), ("gs://b", False)],
)
def test_uris(uri: str, ok: bool) -> None:
    assert (check_uri(uri) is None) == ok


def test_records_append_locally_and_are_put_whole_on_s3(store: RunStore) -> None:
    now = [0.0]
    record = RecordFile(store, "metrics.jsonl", flush_interval_s=10, clock=lambda: now[0])
    record.append({"env_steps": 1})
    visible = RecordFile(store, "metrics.jsonl").rows()  # what another process reads
    assert visible == ([{"env_steps": 1}] if store.local else [])  # S3: not flushed yet
    now[0] = 11.0
    record.append({"env_steps": 2})  # the interval passed: the whole file is uploaded
    assert RecordFile(store, "metrics.jsonl").rows() == [{"env_steps": 1}, {"env_steps": 2}]
    record.append({"env_steps": 3})
    record.close()
    assert [r["env_steps"] for r in RecordFile(store, "metrics.jsonl").rows()] == [1, 2, 3]


def test_a_resumed_writer_continues_after_a_torn_line(store: RunStore) -> None:
    store.write("metrics.jsonl", b'{"env_steps": 1}\n{"env_steps": 2}\n{"env_st')
    assert trim_metrics(RecordFile(store, "metrics.jsonl"), env_steps=1) == 2
    record = RecordFile(store, "metrics.jsonl")
    record.append({"env_steps": 2})
    record.close()
    assert store.read("metrics.jsonl") == b'{"env_steps": 1}\n{"env_steps": 2}\n'


def test_the_transition_log_goes_to_the_store_one_part_per_batch(store: RunStore) -> None:
    batch = pa.RecordBatch.from_pydict(
        {"actor_id": pa.array(np.full(4, 3, np.int32)), "reward": pa.array(np.ones(4, np.float32))}
    )
    for life in range(2):  # a restarted actor: a new incarnation, its own parts
        assert next_incarnation(store.uri, 3) == life
        log = TransitionLog(store.uri, 3, {"run_seed": 0})
        assert log.incarnation == life
        log.append(batch)
        log.append(batch)
    assert len(part_names(store)) == 4
    assert transitions(store.uri).to_table().num_rows == 16
    record = store.read_json("transitions/actor-003/incarnation-001.json")
    assert record["run_seed"] == 0 and {"node_id", "host", "pid"} <= set(record)
