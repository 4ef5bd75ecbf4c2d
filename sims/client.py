"""A Gymnasium env that is a simulator running elsewhere (``python -m sims.server``).

A rollout actor uses :class:`RemoteEnv` exactly like a local env. When the
simulator dies or stops answering within the timeout, the env reconnects (in
``launch`` mode, relaunching the server process first) and reports the cut
episode honestly: that step returns the last good observation with
``truncated=True`` and ``info["simulator_failure"] = True``, and the next
``reset()`` starts a fresh episode. Malformed replies count as failures too; a
request the simulator rejects (``ok: false``) raises :class:`SimulatorError`.

What the simulator declares (``sims.declarations``) arrives in the handshake, so a
:class:`RemoteEnv` answers ``oracle_action()``, ``state_key()`` and
``reachable_state_count()`` exactly where the env behind it does.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from sims.declarations import Declarations
from sims.protocol import PROTOCOL_VERSION, ProtocolError, receive, send
from sims.registry import split_env_id
from turnwise.spaces import space_from_json

log = logging.getLogger(__name__)

FAILURES = (ConnectionError, ProtocolError, OSError, TimeoutError)


class SimulatorError(RuntimeError):
    """The simulator refused a request, or does not speak our protocol or version."""


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"simulator address must be HOST:PORT, got {address!r}")
    return host, int(port)


class SimulatorLauncher:
    """One local ``python -m sims.server`` process, (re)started on demand."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], host: str = "127.0.0.1") -> None:
        self.env_id, self.env_kwargs, self.host = env_id, env_kwargs, host
        self.process: subprocess.Popen | None = None
        self._address = ""
        self._lock = threading.Lock()
        self.launches = 0
        atexit.register(self.close)

    def address(self) -> str:
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                self._launch()
            return self._address

    def _launch(self) -> None:
        command = [
            sys.executable,
            "-m",
            "sims.server",
            "--env",
            self.env_id,
            "--port",
            "0",
            "--host",
            self.host,
            "--env-kwargs",
            json.dumps(self.env_kwargs),
        ]
        # the server imports what this process imports (a plug-in env's module included)
        path = os.pathsep.join(entry for entry in sys.path if entry)
        environment = {**os.environ, "PYTHONPATH": path}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SimulatorError(f"simulator server did not start: {line or 'no output'}")
        self._address = line.removeprefix("listening on ")
        self.launches += 1
        log.info(
            "launched simulator %s at %s (pid %d)", self.env_id, self._address, self.process.pid
        )

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class RemoteEnv(gym.Env):
    """A client session with a simulator server; one env per connection."""

    def __init__(
        self,
        env_id: str,
        address: Callable[[], str],
        timeout_s: float = 30.0,
        connect_retries: int = 20,
    ) -> None:
        self.env_id, self._address, self.timeout_s = env_id, address, timeout_s
        self.connect_retries = connect_retries
        self.failures = 0
        self.version: str | None = None
        self._sock: socket.socket | None = None
        self._last_obs: np.ndarray | None = None
        self._state_key: Any = None
        self._reachable: int | None = None
        self._connect()

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> None:
        error: Exception | None = None
        for attempt in range(self.connect_retries):
            try:
                host, port = parse_address(self._address())
                self._sock = socket.create_connection((host, port), timeout=self.timeout_s)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._handshake()
                return
            except FAILURES as caught:
                error = caught
                self._drop()
                time.sleep(min(0.1 * 2**attempt, 2.0))
            except SimulatorError:  # refused (another env or version): no retry
                self._drop()
                raise
        raise SimulatorError(f"cannot reach simulator {self.env_id}: {error}") from error

    def _handshake(self) -> None:
        reply = self._call({"op": "hello", "protocol": PROTOCOL_VERSION})
        spec = reply["spec"]
        if split_env_id(spec["env_id"])[1] != split_env_id(self.env_id)[1]:
            raise SimulatorError(f"simulator serves {spec['env_id']}, expected {self.env_id}")
        if self.version is not None and spec["env_version"] != self.version:
            raise SimulatorError(
                f"simulator version changed from {self.version} to {spec['env_version']}"
            )
        self.version = spec["env_version"]
        self.observation_space = space_from_json(spec["observation_space"])
        self.action_space = space_from_json(spec["action_space"])
        self.declarations = Declarations.from_json({**spec, "version": self.version})
        self.reward_components = self.declarations.reward_components

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._sock is None:
            raise ConnectionError("not connected")
        send(self._sock, message)
        reply = receive(self._sock)
        if not reply.get("ok"):
            raise SimulatorError(str(reply.get("error", "the simulator refused the request")))
        return reply

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _recover(self, error: Exception) -> None:
        self.failures += 1
        log.warning("simulator %s failed (%s); reconnecting", self.env_id, error)
        self._drop()
        self._connect()

    # -- Gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        message = {"op": "reset", "seed": seed, "options": options}
        try:
            reply = self._call(message)
        except FAILURES as error:
            self._recover(error)
            reply = self._call(message)
        self._last_obs = reply["obs"]
        self._state_key = _hashable(reply.get("state_key"))
        self._reachable = reply.get("reachable_states")
        return reply["obs"], reply["info"]

    def step(self, action):
        try:
            reply = self._call({"op": "step", "action": action})
        except FAILURES as error:
            self._recover(error)
            parts = dict.fromkeys(self.reward_components, 0.0)
            info = {"simulator_failure": True, "reward_components": parts}
            return self._last_obs, 0.0, False, True, info
        self._last_obs = reply["obs"]
        self._state_key = _hashable(reply.get("state_key"))
        info = reply["info"]
        return reply["obs"], reply["reward"], reply["terminated"], reply["truncated"], info

    # -- what the simulator declares (sims.declarations) --------------------------------
    def oracle_action(self) -> Any:
        """The simulator's known-optimal action in the current state (one round trip)."""
        self._require("oracle", "oracle_action()")
        return self._call({"op": "oracle_action"})["action"]

    def state_key(self) -> Any:
        self._require("state_key", "state_key()")
        return self._state_key

    def reachable_state_count(self) -> int:
        self._require("reachable_states", "reachable_state_count()")
        return int(self._reachable)

    def _require(self, declaration: str, what: str) -> None:
        if not getattr(self.declarations, declaration):
            raise SimulatorError(f"simulator {self.env_id} declares no {what}")

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._call({"op": "close"})
            except (*FAILURES, SimulatorError):
                pass
            self._drop()


def _hashable(value: Any) -> Any:
    """A state key as it was before msgpack turned its tuples into lists."""
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value
