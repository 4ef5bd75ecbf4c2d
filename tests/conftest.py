"""Helpers shared by the test modules."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

REPO = Path(__file__).resolve().parent.parent


def _wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s until it is truthy; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def wait_for() -> Callable[[Callable[[], object], float, str], None]:
    return _wait_for


def start_simulator(
    env_id: str = "Warehouse-v0",
    port: int = 0,
    kwargs: str = "{}",
    cwd: Path = REPO,
) -> tuple[subprocess.Popen, str]:
    """A real ``python -m sims.server`` process and its HOST:PORT (stop it by PID)."""
    command = [sys.executable, "-m", "sims.server", "--env", env_id, "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--env-kwargs", kwargs], cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    line = process.stdout.readline().strip()
    assert line.startswith("listening on 127.0.0.1:"), line
    return process, line.removeprefix("listening on ")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with the bucket ``turnwise``; the AWS variables
    that reach it are set for the module (and passed on to subprocesses)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="turnwise")
        yield env
    server.stop()


def make_checkpoint(
    store_dir: Path,
    env_steps: int = 1000,
    train_return: float = 1.0,
    overrides: tuple[str, ...] = ("+exp=warehouse",),
) -> str:
    """An untrained policy's checkpoint for the run config ``overrides``, marked for
    evaluation, in the store at ``store_dir``."""
    import dataclasses

    from actors.envs import describe_env
    from turnwise.checkpoint import save_checkpoint
    from turnwise.checkpoint_store import open_store
    from turnwise.config import compose_config
    from turnwise.policy import build_policy
    from turnwise.spaces import space_to_json

    config = compose_config([*overrides, "learner.hidden_sizes=[16,16]"])
    env = describe_env(config.env)
    model = build_policy(env.observation_space, env.action_space, [16, 16])
    manifest = {
        "evaluate": True,
        "env_id": env.env_id,
        "env_version": env.version,
        "observation_space": space_to_json(env.observation_space),
        "action_space": space_to_json(env.action_space),
        "env_steps": env_steps,
        "policy_version": env_steps // 100,
        "train_return": train_return,
        "config": dataclasses.asdict(config),
    }
    return save_checkpoint(open_store(str(store_dir)), model.state_dict(), {}, manifest)


def timed_command(args: list[str], timeout: float = 120) -> tuple[int, str, str, float]:
    """``python ARGS`` from the repository root: exit code, stdout, stderr and seconds
    (the "fails fast, before Ray" tests time the whole command)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


def step_alike(fast, slow, actions) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Step a batched env and its reference (a Gymnasium vector of single envs) with the
    same actions; assert equal observations, rewards and ends. Returns terminated,
    truncated and both infos (the reference's final infos under ``final_info``)."""
    fast_step, slow_step = fast.step(actions), slow.step(actions)
    for fast_part, slow_part in zip(fast_step[:4], slow_step[:4], strict=True):
        np.testing.assert_array_equal(fast_part, slow_part)
    return fast_step[2], fast_step[3], fast_step[4], slow_step[4]
