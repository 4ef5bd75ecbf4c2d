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
COMPARED = [
    "episode_id",
    "step",
    "obs",
    "action",
    "reward",
    "reward_deliver",
    "reward_pick",
    "terminated",
    "truncated",
    "episode_return",
    "reset_options",
    "env_version",
]


@pytest.fixture()
def server():
    process, address = start_simulator(kwargs='{"size": "small"}')
    yield process, address
    process.kill()
    process.wait()


def worker(tmp_path: Path, env: EnvConfig, envs: int = 4) -> RolloutWorker:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(Config(env=env))))
    actors_cfg = ActorsConfig(envs_per_actor=envs, fragment_length=50)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same initial policy weights for every worker
        return RolloutWorker(0, env, actors_cfg, PPOConfig(hidden_sizes=[16]), 7, str(tmp_path))


def sample(w: RolloutWorker, batches: int):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return [w.sample(None) for _ in range(batches)]


def test_transitions_through_the_server_match_an_in_process_run(tmp_path, server):
    _, address = server
    local = EnvConfig(kwargs={"size": "small"}, vectorization="sync")
    remote = EnvConfig(
        kwargs={"size": "small"}, simulator=SimulatorConfig(mode="connect", address=address)
    )
    ours = sample(worker(tmp_path / "local", local), 3)
    theirs = sample(worker(tmp_path / "remote", remote), 3)
    for a, b in zip(ours, theirs, strict=True):
        assert a.select(COMPARED).to_pylist() == b.select(COMPARED).to_pylist()
    ended = sum(int(pc.sum(b.column("truncated")).as_py() or 0) for b in ours)
    assert ended > 0  # the comparison crosses episode boundaries (autoresets)


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


def test_a_dead_simulator_is_replaced_and_the_cut_episode_is_marked(tmp_path):
    config = EnvConfig(
        kwargs={"size": "small"}, simulator=SimulatorConfig(mode="launch", timeout_s=10)
    )
    actors.envs.close_launchers()  # only this test's launcher from here on
    w = worker(tmp_path, config, envs=2)
    w.sample(None)
    [launcher] = actors.envs._LAUNCHERS.values()
    launcher.process.kill()
    launcher.process.wait()
    batches = [w.sample(None) for _ in range(2)]
    assert launcher.launches >= 2  # a new server process
    failed = [b.filter(b.column("simulator_failure")) for b in batches]
    cut = [row for f in failed for row in f.to_pylist()]
    assert cut and all(r["truncated"] and r["reward"] == 0.0 for r in cut)
    assert all(b.column("obs") is not None for b in batches)
    result = verify_episode(tmp_path, cut[0]["episode_id"])
    assert result.ok and result.cut_by_simulator_failure
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
