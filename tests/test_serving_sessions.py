"""Sessions over real HTTP on 127.0.0.1: a recurrent policy's state kept between turns.

One local Ray Serve with two apps, each with its own session store:

- ``memory`` (``/``): an untrained LSTM policy for Warehouse-Memory-v0 on 2 replicas,
  sessions bounded to ``MAX_SESSIONS`` with a short idle TTL;
- ``cartpole`` (``/cartpole``): an untrained LSTM policy for Gymnasium's CartPole-v1.

The store's own rules (bounds, expiry, turn conflicts) are checked in-process with a
clock the test moves.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import gymnasium
import numpy as np
import pytest
import ray
import requests
from ray import serve

import sims
from serving.app import build_app
from serving.inference import Turn, act_turns
from serving.sessions import SessionStore
from serving.testing import BuiltCheckpoint, make_checkpoint, start_local_ray

MAX_SESSIONS, IDLE_TTL_S = 6, 3.0
JSON = {"Content-Type": "application/json"}


@dataclass
class App:
    url: str
    built: BuiltCheckpoint
    env_id: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    memory = make_checkpoint(str(root / "memory"), env_id=sims.WAREHOUSE_MEMORY_ID, core="lstm")
    # seed 2: an untrained policy whose greedy actions vary on CartPole (some seeds' do not)
    cartpole = make_checkpoint(str(root / "cartpole"), env_id="CartPole-v1", core="lstm", seed=2)
    start_local_ray()  # Serve's mode as `python -m serving` runs it
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        half_cpu = {"ray_actor_options": {"num_cpus": 0.5}}
        bounds = {"max_sessions": MAX_SESSIONS, "idle_ttl_s": IDLE_TTL_S, "max_age_s": 60}
        serve.run_many(
            [
                serve.RunTarget(
                    build_app(
                        {
                            "checkpoint": memory.uri,
                            "sessions": bounds,
                            "deployment": {**half_cpu, "num_replicas": 2},
                        }
                    ),
                    name="memory",
                    route_prefix="/",
                ),
                serve.RunTarget(
                    build_app({"checkpoint": cartpole.uri, "deployment": half_cpu}),
                    name="cartpole",
                    route_prefix="/cartpole",
                ),
            ]
        )
        url = f"http://127.0.0.1:{port}"
        yield {
            "memory": App(url, memory, sims.WAREHOUSE_MEMORY_ID),
            "cartpole": App(url + "/cartpole", cartpole, "CartPole-v1"),
        }
    finally:
        serve.shutdown()
        ray.shutdown()


def start(http, app: App) -> requests.Response:
    return http.post(app.url + "/v1/sessions", timeout=30)


def turn(http, app: App, session_id: str, body) -> requests.Response:
    return http.post(f"{app.url}/v1/sessions/{session_id}/act", json=body, timeout=30)


def end(http, app: App, session_id: str) -> requests.Response:
    return http.delete(f"{app.url}/v1/sessions/{session_id}", timeout=30)


# -- 1. a session's actions are the recurrent policy's, step for step ---------------------
@pytest.mark.parametrize("name", ["memory", "cartpole"])
def test_session_actions_equal_the_recurrent_policy_on_real_episodes(apps, name):
    """Two episodes played at once, turn by turn, each through its own session: every
    served action equals ``act_recurrent(obs, state, greedy=True)`` from the state the
    in-process policy carried over the same episode; the state matters (from a zero
    state the policy would answer otherwise on some turns). The envs take the served
    action or, half the time, a random one (an untrained policy alone may stand still)."""
    app = apps[name]
    model, rng = app.built.model, np.random.default_rng(0)
    envs = [gymnasium.make(app.env_id) for _ in range(2)]
    with requests.Session() as http:
        started = [start(http, app) for _ in envs]
        assert [r.status_code for r in started] == [201, 201]
        ids = [r.json()["session_id"] for r in started]
        assert started[0].json()["state_size"] == model.state_size > 0
        obs = [env.reset(seed=7 + i)[0] for i, env in enumerate(envs)]
        for i, env in enumerate(envs):
            env.action_space.seed(i)
        states = [model.initial_state(1) for _ in envs]
        live, turns, stateful = [True, True], [0, 0], 0
        while any(live) and sum(turns) < 120:
            for i, env in enumerate(envs):
                if not live[i]:
                    continue
                flat = model.flat([obs[i]])
                expected, _, _, states[i] = model.act_recurrent(flat, states[i], greedy=True)
                zero = model.act_recurrent(flat, model.initial_state(1), greedy=True)[0]
                stateful += int(zero[0] != expected[0])
                reply = turn(http, app, ids[i], {"observation": obs[i].tolist(), "turn": turns[i]})
                assert reply.status_code == 200, reply.text
                body = reply.json()
                assert body["action"] == expected[0].tolist() and body["turn"] == turns[i]
                assert body["checkpoint"] == app.built.name
                action = body["action"] if rng.random() < 0.5 else env.action_space.sample()
                obs[i], _, terminated, truncated, _ = env.step(action)
                turns[i] += 1
                live[i] = not (terminated or truncated)
        assert min(turns) >= 5 and stateful > 0
        for i, session_id in enumerate(ids):
            ended = end(http, app, session_id)
            assert ended.status_code == 200 and ended.json() == {"ended": True, "turns": turns[i]}


# -- 2. unknown, ended and expired sessions, and other bad turns --------------------------
def test_unknown_ended_and_expired_sessions_are_4xx_that_say_so(apps):
    app = apps["memory"]
    obs = gymnasium.make(app.env_id).reset(seed=0)[0].tolist()
    with requests.Session() as http:
        for unknown in ("no-such-session", "x" * 65, "bad%20id"):
            reply = turn(http, app, unknown, {"observation": obs})
            assert reply.status_code == 404 and reply.json()["error"] == "unknown_session"
            assert "POST /v1/sessions" in reply.json()["expected"]
        assert end(http, app, "no-such-session").status_code == 404

        session_id = start(http, app).json()["session_id"]
        assert turn(http, app, session_id, {"observation": obs}).status_code == 200
        assert end(http, app, session_id).status_code == 200
        for again in (
            turn(http, app, session_id, {"observation": obs}),
            end(http, app, session_id),
        ):
            assert again.status_code == 410 and again.json()["error"] == "session_ended"

        idle = start(http, app).json()["session_id"]
        assert turn(http, app, idle, {"observation": obs}).status_code == 200
        time.sleep(IDLE_TTL_S + 0.5)
        reply = turn(http, app, idle, {"observation": obs})
        assert reply.status_code == 410 and reply.json()["error"] == "session_expired"
        assert f"no turn for {IDLE_TTL_S:g} s" in reply.json()["detail"]


def test_bad_turns_are_refused_without_advancing_the_session(apps):
    app = apps["memory"]
    obs = gymnasium.make(app.env_id).reset(seed=0)[0].tolist()
    with requests.Session() as http:
        session_id = start(http, app).json()["session_id"]
        bad = [
            ({"observations": [obs]}, 422, "invalid_request"),  # one observation per turn
            ({"observation": obs[:3]}, 422, "invalid_request"),
            ({"observation": [2.0] * len(obs)}, 422, "out_of_bounds"),
            ({"observation": obs, "return_probs": True}, 422, "invalid_request"),
            ({"observation": obs, "turn": 3}, 409, "turn_conflict"),
        ]
        for body, status, error in bad:
            reply = turn(http, app, session_id, body)
            assert (reply.status_code, reply.json()["error"]) == (status, error), body
        assert turn(http, app, session_id, {"observation": obs, "turn": 0}).json()["turn"] == 0
        repeated = turn(http, app, session_id, {"observation": obs, "turn": 0})
        assert repeated.status_code == 409 and "answered 1 turns" in repeated.json()["detail"]
        stateless = http.post(app.url + "/v1/act", json={"observation": obs}, timeout=30)
        assert stateless.status_code == 409 and stateless.json()["error"] == "needs_session"
        assert end(http, app, session_id).json()["turns"] == 1


# -- 3. the bound holds under a burst ------------------------------------------------------
def test_the_session_bound_holds_under_a_burst_of_new_sessions(apps):
    app = apps["memory"]
    obs = gymnasium.make(app.env_id).reset(seed=0)[0].tolist()
    time.sleep(IDLE_TTL_S)  # earlier tests' leftovers expire
    replies: list[requests.Response] = []
    lock = threading.Lock()

    def burst() -> None:
        with requests.Session() as http:
            for _ in range(5):
                reply = start(http, app)
                with lock:
                    replies.append(reply)

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [r for r in replies if r.status_code == 201]
    refused = [r for r in replies if r.status_code != 201]
    assert len(accepted) == MAX_SESSIONS and len(refused) == 40 - MAX_SESSIONS
    for reply in refused:
        assert reply.status_code == 503 and reply.json()["error"] == "sessions_full"
        assert int(reply.headers["Retry-After"]) >= 1
    with requests.Session() as http:
        described = http.get(app.url + "/v1/policy", timeout=30).json()["sessions"]
        assert described["open"] == MAX_SESSIONS and described["refused_total"] >= len(refused)
        ids = [r.json()["session_id"] for r in accepted]
        for session_id in ids:  # no open session was evicted to make room
            assert turn(http, app, session_id, {"observation": obs}).status_code == 200
        assert end(http, app, ids[0]).status_code == 200
        assert start(http, app).status_code == 201  # a freed place is taken again
        assert start(http, app).status_code == 503


# -- the store's rules and the turn kernel, in-process -------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_store_expires_by_idle_time_and_by_age_and_remembers_why():
    clock = Clock()
    store = SessionStore(max_sessions=3, idle_ttl_s=10, max_age_s=25, clock=clock)
    busy, idle = store.start("ckpt", 2)["session_id"], store.start("ckpt", 2)["session_id"]
    assert store.get(busy) == {"turn": 0, "state": None, "state_size": 2, "policy": "ckpt"}
    for step in range(3):
        clock.now += 8
        assert store.commit(busy, step, np.ones(2) * step, "ckpt") == {"turn": step + 1}
    assert store.get(idle) == {"error": "expired_idle"}  # 24 s without a turn
    np.testing.assert_array_equal(store.get(busy)["state"], [2.0, 2.0])
    clock.now += 2
    assert store.get(busy) == {"error": "expired_age"}  # 26 s old, however busy
    assert store.get("never") == {"error": "unknown"}
    counts = store.stats()
    assert counts["open"] == 0 and counts["expired_total"] == 2


def test_store_refuses_past_its_bound_and_never_evicts_an_open_session():
    clock = Clock()
    store = SessionStore(max_sessions=2, idle_ttl_s=10, max_age_s=100, clock=clock)
    first, second = (store.start("c", 0)["session_id"] for _ in range(2))
    clock.now += 4
    assert store.start("c", 0) == {"error": "full", "retry_after_s": 6}
    assert store.commit(first, 0, np.zeros(0), "c") == {"turn": 1}
    clock.now += 6.5  # `second` has idled 10.5 s: purged to make room; `first` stays
    third = store.start("c", 0)
    assert "session_id" in third and store.get(second) == {"error": "expired_idle"}
    assert store.get(first)["turn"] == 1
    assert store.end(first) == {"turns": 1} and store.get(first) == {"error": "ended"}
    assert store.stats()["refused_total"] == 1


def test_store_answers_one_commit_per_turn():
    store = SessionStore()
    session_id = store.start("c", 1)["session_id"]
    assert store.commit(session_id, 0, np.ones(1), "c") == {"turn": 1}
    assert store.commit(session_id, 0, np.zeros(1), "c") == {"error": "conflict", "turn": 1}
    np.testing.assert_array_equal(store.get(session_id)["state"], [1.0])


def test_turns_of_a_gru_policy_carry_its_state(tmp_path):
    model = make_checkpoint(str(tmp_path), env_id="CartPole-v1", core="gru", seed=2).model
    env = gymnasium.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    state, mine = model.initial_state(1), model.initial_state(1)
    for step in range(20):
        flat = model.flat([obs])
        expected, _, _, state = model.act_recurrent(flat, state, greedy=True)
        [answer], _ = act_turns(model, [Turn(flat, mine)])
        assert answer.action.tolist() == expected.tolist()
        np.testing.assert_array_equal(answer.state, state)
        mine = answer.state
        obs, _, terminated, truncated, _ = env.step(step % 2)
        if terminated or truncated:
            break


def test_turns_of_a_memoryless_policy_are_its_stateless_actions(tmp_path):
    built = make_checkpoint(str(tmp_path))  # Warehouse-v0, mlp: state_size 0
    model = built.model
    env = gymnasium.make(sims.WAREHOUSE_ID)
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    turns = [Turn(row[None], model.initial_state(1)) for row in obs]
    answers, _ = act_turns(model, turns)
    assert [int(a.action[0]) for a in answers] == model.act(obs, greedy=True)[0].tolist()
    assert all(a.state.shape == (1, 0) for a in answers)
