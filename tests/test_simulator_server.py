"""The simulator server and its Gymnasium client: equivalence, failures, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import ray
import torch
from conftest import start_simulator

import actors.envs
from actors.envs import RemoteVectorEnv
from actors.replay import verify_episode
from actors.rollout import RolloutWorker
from actors.transition_log import transitions
from learner.driver import Trainer, train
from sims.client import RemoteEnv, SimulatorError
from sims.protocol import PROTOCOL_VERSION, receive, send
from turnwise.config import (
    ActorsConfig,
    Config,
    EnvConfig,
    PPOConfig,
    SimulatorConfig,
    compose_config,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def server():
    process, address = start_simulator(kwargs='{"size": "small"}')
    yield process, address
    process.kill()
    process.wait()


def worker(tmp_path: Path, env: EnvConfig, envs: int = 4, groups: int = 1) -> RolloutWorker:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(Config(env=env))))
    actors_cfg = ActorsConfig(envs_per_actor=envs, fragment_length=50, env_groups=groups)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same initial policy weights for every worker
        return RolloutWorker(0, env, actors_cfg, PPOConfig(hidden_sizes=[16]), 7, str(tmp_path))


def sample(w: RolloutWorker, batches: int):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return [w.sample(None) for _ in range(batches)]


@pytest.mark.parametrize(
    ("env_id", "kwargs", "vectorization", "vectorized"),
    [
        ("Warehouse-v0", {"size": "small"}, "auto", True),  # WarehouseVectorEnv both sides
        ("Warehouse-v0", {"size": "small"}, "sync", False),  # a loop of WarehouseEnv
        ("CartPole-v1", {}, "auto", False),  # Gymnasium's: no batched implementation
        ("space_envs:Reorder-v0", {}, "auto", False),  # Tuple obs, masked MultiDiscrete
    ],
)
@pytest.mark.parametrize("groups", [1, 2])
def test_the_transition_logs_in_process_and_through_the_server_are_identical(
    tmp_path, env_id, kwargs, vectorization, vectorized, groups
):
    """The same seeds give the same Parquet transition log, column by column, whether
    the envs run in-process or in a real ``python -m sims.server`` (batched sessions;
    one group, and two overlapped): Warehouse-v0 (its batched env, and a loop), Gymnasium's
    CartPole-v1 and a test-local env of other spaces."""
    cwd = REPO / "tests" if ":" in env_id else REPO  # where the test-local env module is
    process, address = start_simulator(env_id, kwargs=json.dumps(kwargs), cwd=cwd)
    try:
        local = EnvConfig(id=env_id, kwargs=kwargs, vectorization=vectorization)
        remote = dataclasses.replace(local, simulator=SimulatorConfig("connect", address))
        for name, env in (("local", local), ("remote", remote)):
            w = worker(tmp_path / name, env, envs=8, groups=groups)
            assert isinstance(w.envs, RemoteVectorEnv) == (name == "remote")
            assert name == "local" or w.envs._vectorized == vectorized
            sample(w, 3)
            w.envs.close()
    finally:
        process.kill()
        process.wait()
    ours, theirs = (transitions(tmp_path / n).to_table() for n in ("local", "remote"))
    assert ours.num_rows == theirs.num_rows == 3 * 50 * 8
    assert ours.schema == theirs.schema
    differ = [c for c in ours.column_names if not ours.column(c).equals(theirs.column(c))]
    assert not differ, f"columns that differ: {differ}"
    records = [
        sorted((tmp_path / n).glob("transitions/*/incarnation-*.json")) for n in ("local", "remote")
    ]
    assert [p.read_text() for p in records[0]] == [p.read_text() for p in records[1]]
    ends = pc.sum(pc.or_(ours.column("terminated"), ours.column("truncated"))).as_py()
    assert ends >= 8  # the comparison crosses episode boundaries (autoresets)


def test_episodes_logged_through_the_server_replay(tmp_path, server):
    _, address = server
    remote = EnvConfig(
        kwargs={"size": "small"}, simulator=SimulatorConfig(mode="connect", address=address)
    )
    sample(worker(tmp_path, remote), 3)
    ids = sorted(
        set(transitions(tmp_path).to_table(columns=["episode_id"]).column("episode_id").to_pylist())
    )
    for episode in ids[:6]:
        assert verify_episode(tmp_path, episode).ok


def test_a_dead_simulator_is_replaced_and_exactly_the_cut_episodes_are_marked(tmp_path):
    config = EnvConfig(
        kwargs={"size": "small"}, simulator=SimulatorConfig(mode="launch", timeout_s=10)
    )
    actors.envs.close_launchers()  # only this test's launcher from here on
    envs = 4
    w = worker(tmp_path, config, envs=envs, groups=2)  # two batched sessions of two envs
    assert [len(g) for g in w.envs.groups] == [2, 2]
    before = w.sample(None)
    [launcher] = actors.envs._LAUNCHERS.values()
    launcher.process.kill()
    launcher.process.wait()
    batches = [w.sample(None) for _ in range(2)]
    assert launcher.launches >= 2  # a new server process
    assert not any(before.column("simulator_failure").to_pylist())
    failed = batches[0].column("simulator_failure").to_pylist()
    assert failed[:envs] == [True] * envs and not any(failed[envs:])  # each env's step 0
    assert not any(batches[1].column("simulator_failure").to_pylist())
    cut = batches[0].filter(batches[0].column("simulator_failure")).to_pylist()
    assert all(r["truncated"] and r["reward"] == 0.0 for r in cut)
    last = before.slice(before.num_rows - envs).to_pylist()  # the episodes in flight
    assert not any(r["terminated"] or r["truncated"] for r in last)
    assert [r["episode_id"] for r in cut] == [r["episode_id"] for r in last]
    assert [r["step"] for r in cut] == [r["step"] + 1 for r in last]
    after = batches[0].slice(envs, envs).to_pylist()  # fresh episodes, nothing joined
    assert all(
        r["step"] == 0 and r["episode_id"] not in {c["episode_id"] for c in cut} for r in after
    )
    for row in cut:
        result = verify_episode(tmp_path, row["episode_id"])
        assert result.ok and result.cut_by_simulator_failure
    for row in after:
        assert verify_episode(tmp_path, row["episode_id"]).ok
    launcher.close()


def test_malformed_messages_get_clear_errors_and_the_server_survives(server):
    _, address = server
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"\x00\x00\x00\x05garbage")  # not msgpack: that session ends
        assert raw.recv(1) == b""
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        send(raw, {"op": "hello", "protocol": PROTOCOL_VERSION + 99})
        reply = receive(raw)
        assert not reply["ok"] and "protocol" in reply["error"]
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(struct.pack(">I", 2**31))  # an absurd frame size: closed, no allocation
        assert raw.recv(1) == b""
    env = RemoteEnv("Warehouse-v0", lambda: address)
    env.reset(seed=1)
    with pytest.raises(SimulatorError, match="not in"):
        env.step(17)
    with pytest.raises(SimulatorError, match="unknown op"):
        env._call({"op": "teleport"})
    obs, *_ = env.step(0)  # the session is still good
    assert obs.shape == env.observation_space.shape
    env.close()


def test_the_handshake_refuses_another_env():
    process, address = start_simulator("CartPole-v1", kwargs="{}")
    try:
        with pytest.raises(SimulatorError, match="CartPole-v1"):
            RemoteEnv("Warehouse-v0", lambda: address, connect_retries=1)
    finally:
        process.kill()
        process.wait()


def test_the_server_rejects_bad_arguments_with_a_message():
    run = subprocess.run(
        [sys.executable, "-m", "sims.server", "--env", "Nope-v0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "Nope-v0" in run.stderr and "Traceback" not in run.stderr


def test_a_training_run_goes_through_the_simulator_server(tmp_path, server):
    _, address = server
    config = compose_config(
        [
            "+exp=warehouse",
            "train.env_steps=4000",
            "train.progress=false",
            "actors.envs_per_actor=8",
            "actors.fragment_length=32",
            "evaluator.enabled=false",
            "env.simulator.mode=connect",
            f"env.simulator.address={address}",
            "monitoring.metrics_port=-1",
        ]
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = train(config, tmp_path)
    finally:
        ray.shutdown()
    assert result.counters.env_steps >= 4000
    logged = transitions(tmp_path).to_table(columns=["obs", "env_version"])
    assert logged.num_rows >= 4000
    assert np.isfinite(np.stack(logged.column("obs").to_numpy(zero_copy_only=False))).all()


def test_killing_the_simulators_mid_run_the_run_finishes_with_cut_episodes_marked(tmp_path):
    """Each rollout actor launches its own sims.server; kill them all mid-run."""
    config = compose_config(
        [
            "+exp=warehouse",
            "train.env_steps=12000",
            "train.progress=false",
            "actors.envs_per_actor=8",
            "actors.fragment_length=32",
            "evaluator.enabled=false",
            "env.simulator.mode=launch",
            "env.simulator.timeout_s=10",
            "monitoring.metrics_port=-1",
        ]
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        trainer = Trainer(config, tmp_path)
        runner = threading.Thread(target=trainer.run)
        runner.start()
        parts = tmp_path / "transitions"
        deadline = time.monotonic() + 180
        while len(list(parts.glob("actor-*/part-*.parquet"))) < 2:
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        servers = subprocess.run(
            ["pgrep", "-f", "sims.server --env Warehouse-v0"], capture_output=True, text=True
        ).stdout.split()
        assert servers, "no launched simulator server found"
        for pid in servers:
            os.kill(int(pid), signal.SIGKILL)
        runner.join(timeout=300)
        assert not runner.is_alive()
    finally:
        ray.shutdown()
    assert trainer.counters.env_steps >= 12000
    failed = transitions(tmp_path).to_table(
        columns=["simulator_failure", "truncated"],
        filter=pc.field("simulator_failure"),
    )
    assert failed.num_rows > 0 and all(failed.column("truncated").to_pylist())


def test_the_driver_keeps_no_launched_probe_server_for_the_run(tmp_path):
    """In launch mode the driver reads the env through a server of its own; it stops that
    server before the run, so only the actors' servers run while it trains."""
    overrides = ["+exp=warehouse", "env.simulator.mode=launch", "monitoring.metrics_port=-1"]
    config = compose_config(overrides)
    actors.envs.close_launchers()
    actors.envs.describe_env(config.env)  # what the driver does first: a probe server
    [probe] = actors.envs._LAUNCHERS.values()
    assert probe.process.poll() is None
    Trainer(config, tmp_path)
    assert not actors.envs._LAUNCHERS
    assert probe.process.poll() is not None, "the probe server still runs"
