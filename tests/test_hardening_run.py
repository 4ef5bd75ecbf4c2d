"""A long run's hardening (issue 14) on a real local Ray with real actors, the
evaluator on: every scheduled checkpoint evaluated under retention across an
evaluator restart, a monotone metrics log after resume, one failure per crash,
no stale transition-log parts, Ray listening on loopback only."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
from pathlib import Path

import pytest
import ray
from conftest import _wait_for as wait_for
from ray.exceptions import ActorDiedError, ActorUnavailableError

from actors.health import ActorFailing, ActorHealth
from evaluator.remote import evaluator_actor_name
from learner.driver import Trainer, ray_session, rollout_actor_name, train
from learner.progress import read_metrics
from turnwise.checkpoint_store import open_store
from turnwise.config import compose_config

SMALL = [
    "+exp=warehouse",
    "actors.envs_per_actor=32",
    "actors.fragment_length=32",
    "train.progress=false",
    "monitoring.metrics_port=0",
]
EVALUATE_EVERY = 16384


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """Ray started the way a local run starts it (the driver's ``ray_session``)."""
    config = compose_config(SMALL)
    config.ray.init = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}
    with ray_session(config):
        yield


# -- helpers --------------------------------------------------------------------------
def evaluated(run_dir: Path) -> list[str]:
    path = run_dir / "evaluations.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["checkpoint"] for line in path.read_text().splitlines()]


def scheduled(run_dir: Path, every: int) -> set[str]:
    """Checkpoints the run marked for evaluation: one where an update crossed a
    multiple of ``every`` env steps, and the final one."""
    steps = [row["env_steps"] for row in read_metrics(run_dir / "metrics.jsonl")]
    crossed = [b for a, b in zip([0, *steps], steps, strict=False) if a // every < b // every]
    return {f"step-{n:012d}" for n in [*crossed, steps[-1]]}


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (Ray's GCS, raylet and workers of a local run)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack += children.get(pid, [])
    return found


def socket_inodes(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)  # /proc/net/tcp*: 32-bit words in host byte order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listening(pids: set[int]) -> list[str]:
    """The TCP addresses ``pids`` listen on, as ``ADDRESS:PORT``."""
    inodes, found = socket_inodes(pids), []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[9]) in inodes:  # 0A: LISTEN
                host, port = fields[1].split(":")
                found.append(f"{_address(host)}:{int(port, 16)}")
    return found


def on_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


# -- a run whose evaluator and one rollout actor are killed -----------------------------
@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """Retention keeps 1 checkpoint; the evaluator is killed while it evaluates, and
    rollout actor 0 right after (a stale tmp part of its first life planted first).
    The run stops once actor 0's second life has logged batches."""
    run_dir = tmp_path_factory.mktemp("killed-run")
    config = compose_config(
        [
            *SMALL,
            "train.env_steps=100000000",
            f"evaluator.every_env_steps={EVALUATE_EVERY}",
            f"checkpoint.every_env_steps={EVALUATE_EVERY}",
            "evaluator.episodes=4",
            "checkpoint.keep_last=1",
        ]
    )
    trainer = Trainer(config, run_dir)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.run()
        except BaseException as error:  # re-raised below, in the test's thread
            outcome["error"] = error

    runner = threading.Thread(target=run)
    runner.start()
    try:
        wait_for(lambda: evaluated(run_dir), 180, "a first evaluation")
        sockets = listening(descendants(os.getpid())) if sys.platform == "linux" else []
        wait_for(lambda: trainer.evaluator.pending is not None, 60, "an evaluation in flight")
        ray.kill(ray.get_actor(evaluator_actor_name(run_dir)), no_restart=False)
        stream = run_dir / "transitions" / "actor-000"
        stale = stream / ".part-000-999999.parquet.tmp"  # as a kill mid-write leaves it
        stale.write_bytes(b"PAR1 torn")
        ray.kill(ray.get_actor(rollout_actor_name(run_dir, 0)), no_restart=False)
        second_life = stream / "part-001-000000.parquet"
        wait_for(second_life.exists, 120, "the restarted actor's batches")
    finally:
        trainer.stop()
        runner.join(timeout=400)
    if "error" in outcome:
        raise outcome["error"]
    return {
        "run_dir": run_dir,
        "result": outcome["result"],
        "stale": stale,
        "sockets": sockets,
    }


def test_a_restarted_evaluator_evaluates_every_scheduled_checkpoint_under_retention(
    killed_run,
):
    run_dir, result = killed_run["run_dir"], killed_run["result"]
    names = evaluated(run_dir)
    assert len(names) == len(set(names))  # none twice
    missing = scheduled(run_dir, EVALUATE_EVERY) - set(names)
    assert not missing, f"scheduled, never evaluated: {sorted(missing)}"
    assert result.counters.evaluations == len(names)
    store = open_store(str(run_dir / "checkpoints"))
    assert len(store.list()) <= 2  # keep_last=1 (+ best) once nothing awaits evaluation
    final = json.loads(store.read(store.pointer("latest"), "manifest.json"))
    assert final["counters"]["evaluations"] >= 1


def test_one_kill_counts_one_failure(killed_run):
    counters = killed_run["result"].counters
    assert (counters.actor_failures, counters.evaluator_failures) == (1, 1)


def test_a_restarted_actor_removes_its_streams_stale_tmp_parts(killed_run):
    assert not killed_run["stale"].exists()
    stream = killed_run["run_dir"] / "transitions" / "actor-000"
    assert sorted(p.name for p in stream.glob("incarnation-*.json")) == [
        "incarnation-000.json",
        "incarnation-001.json",
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_local_run_listens_on_loopback_only(killed_run):
    sockets = killed_run["sockets"]
    assert len(sockets) >= 4  # GCS, raylet, the workers, the metrics endpoint at least
    assert [s for s in sockets if not on_loopback(s)] == []


# -- resume -----------------------------------------------------------------------------
def test_a_resumed_run_has_a_monotone_metrics_log_without_a_torn_line(tmp_path):
    """A crash after the checkpoint at 4096 steps, mid-write of a metrics row: the
    later checkpoint is gone and the log ends with rows past 4096 and a torn line."""
    first = compose_config([*SMALL, "train.env_steps=6144", "checkpoint.every_env_steps=2048"])
    train(first, tmp_path)
    store = open_store(str(tmp_path / "checkpoints"))
    assert store.list()[-2:] == ["step-000000004096", "step-000000006144"]
    store.delete("step-000000006144")
    store.set_pointer("latest", "step-000000004096")
    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as handle:
        handle.write('{"env_steps": 71')  # torn: no end, no newline
    again = compose_config([*SMALL, "train.env_steps=8192", "resume=true"])
    result = train(again, tmp_path)
    lines = metrics.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line whole
    steps = [row["env_steps"] for row in rows]
    assert steps == sorted(set(steps)), steps  # strictly increasing
    assert 5120 in steps  # the first resumed row survives
    assert steps[-1] == result.counters.env_steps


# -- crash counting ---------------------------------------------------------------------
def test_a_slow_restart_is_one_crash_and_not_a_failing_actor():
    """A kill, then 40 s of calls failing while Ray restarts the actor (one every 2 s,
    as Ray answers them): one crash, and the actor is not failing."""
    health = ActorHealth("rollout actor 0")
    killed = ActorUnavailableError("IOError: The actor was restarted", None)
    assert health.failed(killed, submitted=0.0, now=1.0)
    restarting = ActorUnavailableError("IOError: The actor is restarting.", None)
    for second in range(3, 43, 2):
        assert not health.failed(restarting, submitted=second - 2.0, now=float(second))
        health.check(now=float(second))
    health.succeeded()
    assert health.crashes_total == 1
    with pytest.raises(ActorFailing, match="will not restart"):  # a dead one is told apart
        health.failed(killed, submitted=50.0, now=51.0)
        health.failed(ActorDiedError(), submitted=51.0, now=52.0)
