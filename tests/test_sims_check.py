"""``python -m sims.check``: reference envs pass, each broken env fails exactly its check."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import check_envs  # noqa: F401  (registers the Check*-v0 envs)
import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from sims.check import CHECKS, env_factory, is_address, run_checks, unbounded_part

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
NAMES = [
    "check_env",
    "determinism",
    "variety",
    "bounded actions",
    "version",
    "reward components",
    "state variables",
    "episode budget",
]
FAST = {"steps": 40, "max_episode_steps": 300}


def check(env_id: str, **kwargs) -> dict[str, tuple[bool, str]]:
    results = run_checks(lambda: gymnasium.make(env_id), env_id, {}, **{**FAST, **kwargs})
    assert [r.name for r in results] == NAMES
    return {r.name: (r.ok, r.reason) for r in results}


def failed(results: dict[str, tuple[bool, str]]) -> set[str]:
    return {name for name, (ok, _) in results.items() if not ok}


def test_checks_are_the_eight_in_order():
    assert [name for name, _ in CHECKS] == NAMES


@pytest.mark.parametrize("env_id", ["Warehouse-v0", "CartPole-v1", "check_envs:CheckCorridor-v0"])
def test_correct_envs_pass_every_check(env_id):
    results = check(env_id)
    assert failed(results) == set(), results


def test_cartpole_version_is_derived_from_its_package():
    ok, reason = check("CartPole-v1")["version"]
    assert ok and reason.startswith("derived from installed package gymnasium-"), reason


def test_warehouse_reports_its_persistent_inventory():
    ok, reason = check("Warehouse-v0")["state variables"]
    assert ok and "persistent inventory" in reason, reason


BROKEN = [
    ("CheckNondeterministic-v0", "determinism", "observation differs"),
    ("CheckSameEveryEpisode-v0", "variety", "identical episodes"),
    ("CheckUnboundedActions-v0", "bounded actions", "unbounded in 1 of 1"),
    ("CheckNoVersion-v0", "version", "declares no version"),
    ("CheckBadComponentSum-v0", "reward components", "step 1: components sum to -0.01"),
    ("CheckUndeclaredPersistence-v0", "state variables", '"persistent_state"'),
    ("CheckBadScope-v0", "state variables", "'position' has scope 'forever'"),
    ("CheckEndless-v0", "episode budget", "episode 1 did not end within 300 steps"),
    ("CheckWrongDtype-v0", "check_env", "not within the observation space"),
]


@pytest.mark.parametrize(("env_id", "name", "reason"), BROKEN)
def test_each_broken_env_fails_exactly_its_check(env_id, name, reason):
    results = check(f"check_envs:{env_id}")
    assert failed(results) == {name}, results
    assert reason in results[name][1]


def test_every_check_has_a_broken_env():
    assert {name for _, name, _ in BROKEN} == set(NAMES)


def test_unbounded_part_names_the_nested_space():
    bounded = spaces.Dict({"a": spaces.Discrete(2), "b": spaces.MultiBinary(3)})
    assert unbounded_part(bounded, "action_space") is None
    box = spaces.Box(np.array([0.0, -np.inf]), np.array([1.0, 1.0]), dtype=np.float64)
    nested = spaces.Dict({"ok": spaces.Box(-1, 1, (2,)), "arm": spaces.Tuple((bounded, box))})
    problem = unbounded_part(nested, "action_space")
    assert problem.startswith("action_space['arm'][1] is Box("), problem
    assert "unbounded in 1 of 2" in problem


@pytest.mark.parametrize(
    ("target", "address"),
    [
        ("127.0.0.1:5555", True),
        ("localhost:80", True),
        ("CartPole-v1", False),
        ("my_pkg.envs:Corridor-v0", False),
        ("a:b", False),
    ],
)
def test_an_address_is_host_colon_digits(target, address):
    assert is_address(target) is address


# -- the command line ----------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "sims.check", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_passes_cartpole():
    result = cli("CartPole-v1", "--steps", "50")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("✓ ") == 8
    assert "all 8 checks passed" in result.stdout


def test_cli_fails_a_broken_env_with_its_row():
    result = cli("check_envs:CheckNoVersion-v0", "--steps", "50")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗ version — declares no version" in result.stdout
    assert "1 of 8 checks failed: version" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_pkg:Foo-v0"], "module 'no_such_pkg' cannot be imported"),
        (["CartPole-v1", "--steps", "0"], "must be at least 1"),
        (["CartPole-v1", "--env-kwargs", "[1]"], "must be a JSON object"),
        (["CartPole-v1", "--env-kwargs", '{"nope": 1}'], "cannot make CartPole-v1"),
    ],
)
def test_cli_usage_errors_exit_2_without_a_traceback(args, message):
    result = cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# -- a running sims.server -----------------------------------------------------------
@pytest.fixture
def serve() -> Iterator:
    """Start ``python -m sims.server --env ENV --port 0``; yields a function that returns
    its HOST:PORT; every server started is stopped by PID at the end."""
    processes: list[subprocess.Popen] = []

    def start(env_id: str) -> str:
        path = os.pathsep.join([str(TESTS), str(REPO)])
        process = subprocess.Popen(
            [sys.executable, "-m", "sims.server", "--env", env_id, "--port", "0"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": path},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        processes.append(process)
        line = process.stdout.readline().strip()
        assert line.startswith("listening on "), line
        return line.removeprefix("listening on ")

    yield start
    for process in processes:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_cli_passes_a_warehouse_server(serve):
    address = serve("Warehouse-v0")
    result = cli(address, "--steps", "40")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{address} (Warehouse-v0): all 8 checks passed" in result.stdout
    assert "✓ version — from the server's handshake: warehouse+" in result.stdout


def test_a_nondeterministic_server_fails_determinism(serve):
    address = serve("check_envs:CheckNondeterministic-v0")
    make_env, env_id = env_factory(address, {})
    assert env_id == "check_envs:CheckNondeterministic-v0"
    results = run_checks(make_env, env_id, {}, **FAST)
    assert {r.name for r in results if not r.ok} == {"determinism"}, results


def test_an_unreachable_server_exits_2():
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        result = cli(f"127.0.0.1:{sock.getsockname()[1]}")
    assert result.returncode == 2
    assert "cannot reach a sims.server" in result.stderr
    assert "Traceback" not in result.stderr
