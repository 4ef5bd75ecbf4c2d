"""Batched simulator sessions (protocol 2): the messages on the wire, their errors, the
fallback to one session per env, and the rollout actor's overlapped group schedule."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from conftest import REPO, start_simulator

import actors.envs
from actors.envs import EpisodeSeededVectorEnv, RemoteVectorEnv, make_vector_env
from actors.rollout import RolloutWorker
from actors.transition_log import transitions
from sims.client import BatchSession, HandshakeRefused, RemoteEnv
from sims.protocol import BATCHED_PROTOCOL, PROTOCOL_VERSION, pack, receive, send, unpack
from sims.warehouse import WarehouseVectorEnv
from turnwise.config import ActorsConfig, Config, EnvConfig, PPOConfig, SimulatorConfig

SMALL = {"size": "small"}


@pytest.fixture(scope="module")
def warehouse():
    process, address = start_simulator(kwargs=json.dumps(SMALL))
    yield address
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def cartpole():
    process, address = start_simulator("CartPole-v1")
    yield address
    process.kill()
    process.wait()


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def call(sock: socket.socket, message: dict) -> dict:
    send(sock, message)
    return receive(sock)


def batch_hello(sock: socket.socket, num_envs: int, **extra) -> dict:
    return call(sock, {"op": "hello", "protocol": BATCHED_PROTOCOL, "num_envs": num_envs, **extra})


def test_one_message_steps_every_env_of_a_batched_session(warehouse):
    seeds, local = [1, 2, 3], WarehouseVectorEnv(3, **SMALL)
    local_obs, local_info = local.reset(seed=seeds)
    rng = np.random.default_rng(0)
    with closing(connect(warehouse)) as sock:
        hello = batch_hello(sock, 3)
        assert hello["ok"] and hello["num_envs"] == 3 and hello["vectorized"] is True
        reply = call(sock, {"op": "reset_batch", "seeds": seeds, "options": None})
        np.testing.assert_array_equal(reply["obs"], local_obs)
        np.testing.assert_array_equal(reply["info"]["inventory"], local_info["inventory"])
        for _ in range(200):  # the warehouse's shifts end: autoresets on the server too
            actions = rng.integers(0, 6, 3)
            reply = call(sock, {"op": "step_batch", "actions": actions, "reset_seeds": None})
            obs, rewards, terminated, truncated, info = local.step(actions)
            np.testing.assert_array_equal(reply["obs"], obs)
            np.testing.assert_array_equal(reply["rewards"], rewards)
            assert reply["rewards"].dtype == np.float64
            np.testing.assert_array_equal(reply["terminated"], terminated)
            np.testing.assert_array_equal(reply["truncated"], truncated)
            parts = reply["info"]["reward_components"]
            assert all(np.array_equal(parts[k], v) for k, v in info["reward_components"].items())
            assert ("reset_info" in reply["info"]) == (terminated | truncated).any()
        assert call(sock, {"op": "close"}) == {"ok": True}


def test_a_loop_session_resets_each_ended_env_with_the_seed_it_was_given(cartpole):
    rng = np.random.default_rng(0)
    with closing(connect(cartpole)) as sock:
        assert batch_hello(sock, 4)["vectorized"] is False  # CartPole has no batched env
        call(sock, {"op": "reset_batch", "seeds": [10, 11, None, 13], "options": None})
        for _ in range(200):
            reset_seeds = [int(s) for s in rng.integers(0, 2**31, 4)]
            reply = call(
                sock,
                {"op": "step_batch", "actions": rng.integers(0, 2, 4), "reset_seeds": reset_seeds},
            )
            assert reply["ok"], reply
            done = reply["terminated"] | reply["truncated"]
            if done.any():
                break
        info = reply["info"]
        np.testing.assert_array_equal(info["_final_obs"], done)
        for i in np.flatnonzero(done):
            fresh, _ = gymnasium.make("CartPole-v1").reset(seed=reset_seeds[i])
            np.testing.assert_array_equal(reply["obs"][i], fresh)  # SAME_STEP, seeded
            assert not np.array_equal(info["final_obs"][i], fresh)


def test_a_batched_request_that_fails_is_refused_and_the_session_goes_on(warehouse):
    with closing(connect(warehouse)) as sock:
        batch_hello(sock, 2)
        early = call(sock, {"op": "step_batch", "actions": np.zeros(2, np.int64)})
        assert not early["ok"] and "reset" in early["error"]
        assert call(sock, {"op": "reset_batch", "seeds": [1, 2]})["ok"]
        refusals = {
            "not in": {"op": "step_batch", "actions": np.array([0, 9])},
            "not in MultiDiscrete": {"op": "step_batch", "actions": np.zeros(3, np.int64)},
            "expected 2 seeds": {"op": "reset_batch", "seeds": [1]},
            "unknown op": {"op": "oracle_action"},  # one-env sessions only
        }
        for text, request in refusals.items():
            reply = call(sock, request)
            assert not reply["ok"] and text in reply["error"], reply
        reply = call(sock, {"op": "step_batch", "actions": np.array([0, 1])})
        assert reply["ok"] and reply["obs"].shape == (2, 51)


@pytest.mark.parametrize(
    ("hello", "named"),
    [
        ({"protocol": PROTOCOL_VERSION, "num_envs": 4}, "needs protocol 2"),
        ({"protocol": BATCHED_PROTOCOL, "num_envs": 0}, "num_envs"),
        ({"protocol": BATCHED_PROTOCOL, "num_envs": "4"}, "num_envs"),
        ({"protocol": 99}, "protocol 1 or 2"),
    ],
)
def test_a_hello_that_opens_no_session_is_answered_then_closed(warehouse, hello, named):
    with closing(connect(warehouse)) as sock:
        reply = call(sock, {"op": "hello", **hello})
        assert not reply["ok"] and named in reply["error"]
        assert sock.recv(1) == b""


def test_a_one_env_session_works_as_before_with_either_protocol(warehouse):
    for protocol in (PROTOCOL_VERSION, BATCHED_PROTOCOL):
        with closing(connect(warehouse)) as sock:
            assert call(sock, {"op": "hello", "protocol": protocol})["protocol"] == protocol
            assert call(sock, {"op": "reset", "seed": 3, "options": None})["ok"]
            assert isinstance(call(sock, {"op": "oracle_action"})["action"], int)
    env = RemoteEnv("Warehouse-v0", lambda: warehouse)
    env.reset(seed=3)
    assert env.step(env.oracle_action())[0].shape == (51,)
    env.close()


def test_object_arrays_in_a_vector_info_travel_as_their_items():
    items = np.empty(3, dtype=object)
    items[:] = ["a", None, 2.5]
    nested = np.empty(2, dtype=object)
    nested[0], nested[1] = [1, 2], {"k": np.arange(2)}
    decoded = unpack(pack({"x": items, "y": nested})[4:])
    assert decoded["x"].dtype == object and decoded["x"].tolist() == ["a", None, 2.5]
    assert decoded["y"][0] == [1, 2] and decoded["y"][1]["k"].tolist() == [0, 1]


# -- the actor's side ---------------------------------------------------------------
def worker(tmp_path: Path, env: EnvConfig, envs: int, groups: int = 2) -> RolloutWorker:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(Config(env=env))))
    actors_cfg = ActorsConfig(envs_per_actor=envs, fragment_length=40, env_groups=groups)
    torch.manual_seed(0)
    return RolloutWorker(0, env, actors_cfg, PPOConfig(hidden_sizes=[16]), 7, str(tmp_path))


def test_the_actor_overlaps_one_groups_step_with_the_policy_for_the_other(
    tmp_path, warehouse, monkeypatch
):
    remote = EnvConfig(kwargs=SMALL, simulator=SimulatorConfig(mode="connect", address=warehouse))
    w = worker(tmp_path, remote, envs=6)
    assert isinstance(w.envs, RemoteVectorEnv) and [len(g) for g in w.envs.groups] == [3, 3]
    events: list[str] = []
    for name in ("send", "receive"):
        original = getattr(w.envs, name)

        def spy(group, *args, original=original, name=name):
            events.append(f"{name}{group}")
            return original(group, *args)

        monkeypatch.setattr(w.envs, name, spy)
    act = w.policy.act
    monkeypatch.setattr(w.policy, "act", lambda *a, **k: events.append("act") or act(*a, **k))
    w.sample(None)
    steady = ["receive0", "act", "send0", "receive1", "act", "send1"]
    assert events[:6] == ["act", "send0", "act", "send1", *steady[:2]]
    assert events[4:-2] == steady * (w.fragment_length - 1)  # group 1 in flight while 0 acts
    assert events[-2:] == ["receive0", "receive1"]


def start_old_simulator(env_id: str) -> tuple[subprocess.Popen, str]:
    """A real sims.server speaking protocol 1 only, as a server from before batched
    sessions (or one written elsewhere) does."""
    command = [sys.executable, "-m", "sims.server", "--env", env_id, "--port", "0"]
    process = subprocess.Popen(
        [*command, "--protocol", "1"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    line = process.stdout.readline().strip()
    assert line.startswith("listening on 127.0.0.1:"), line
    return process, line.removeprefix("listening on ")


def test_a_protocol_1_server_gets_one_session_per_env_with_the_same_transitions(tmp_path):
    process, address = start_old_simulator("CartPole-v1")
    try:
        with pytest.raises(HandshakeRefused, match="protocol 1"):
            BatchSession("CartPole-v1", lambda: address, 2, connect_retries=1)
        remote = EnvConfig(id="CartPole-v1", simulator=SimulatorConfig("connect", address))
        vec = make_vector_env(remote, 2, [0, 0, 0])
        assert isinstance(vec, EpisodeSeededVectorEnv)  # over one RemoteEnv per env
        vec.close()
        for name, env in (("local", EnvConfig(id="CartPole-v1")), ("remote", remote)):
            w = worker(tmp_path / name, env, envs=4)
            for _ in range(2):
                w.sample(None)
            w.envs.close()
    finally:
        process.kill()
        process.wait()
    ours, theirs = (transitions(tmp_path / n).to_table() for n in ("local", "remote"))
    assert ours.num_rows == 320 and ours.equals(theirs)


def test_env_groups_split_an_actors_envs_in_order():
    assert [g.tolist() for g in actors.envs.env_groups(5, 2)] == [[0, 1, 2], [3, 4]]
    assert [g.tolist() for g in actors.envs.env_groups(1, 2)] == [[0]]
