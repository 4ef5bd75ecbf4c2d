"""Clients of a simulator running elsewhere (``python -m sims.server``).

:class:`RemoteEnv` is a one-env session, a ``gymnasium.Env`` used exactly like a local
env (the evaluator, ``sims.check``, replay). :class:`BatchSession` is a batched session
(protocol 2): ``num_envs`` envs reset and stepped by one message each, its step split
in ``send_step`` and ``receive_step`` so the caller computes while the server steps (a
rollout actor keeps one per group of its envs, ``actors.envs.RemoteVectorEnv``).

When the simulator dies or stops answering within the timeout, either reconnects (in
``launch`` mode, relaunching the server process first) and reports the cut episodes
honestly: that step returns the last good observation (a batch's ``final_obs``) with
``truncated=True`` and ``info["simulator_failure"] = True``, and each env starts a fresh
episode. Malformed replies count as failures too; a request the simulator rejects
(``ok: false``) raises :class:`SimulatorError`.

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
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sims.declarations import Declarations
from sims.protocol import BATCHED_PROTOCOL, PROTOCOL_VERSION, ProtocolError, receive, send
from sims.registry import split_env_id
from turnwise.spaces import space_from_json

log = logging.getLogger(__name__)

MASK_KEY = "action_mask"  # a legal-action mask in info (turnwise.policy.observations)
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


class HandshakeRefused(SimulatorError):
    """The server answered the hello with ``ok: false`` (another protocol, a batch it
    cannot make): it will not open this kind of session."""


class Connection:
    """A socket to a simulator server, handshake done; :meth:`open` (re)connects with
    retries and checks that the server still serves the same env and version."""

    def __init__(
        self,
        env_id: str,
        address: Callable[[], str],
        hello: dict[str, Any],
        timeout_s: float = 30.0,
        connect_retries: int = 20,
    ) -> None:
        self.env_id, self._address, self._hello = env_id, address, hello
        self.timeout_s, self.connect_retries = timeout_s, connect_retries
        self.version: str | None = None
        self.reply: dict[str, Any] = {}  # the hello's reply: spec (and a batch's size)
        self._sock: socket.socket | None = None
        self.open()

    @property
    def spec(self) -> dict[str, Any]:
        return self.reply["spec"]

    def open(self) -> None:
        self.drop()
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
                self.drop()
                time.sleep(min(0.1 * 2**attempt, 2.0))
            except SimulatorError:  # refused (another env or version): no retry
                self.drop()
                raise
        raise SimulatorError(f"cannot reach simulator {self.env_id}: {error}") from error

    def _handshake(self) -> None:
        try:
            reply = self.call(self._hello)
        except SimulatorError as error:
            raise HandshakeRefused(str(error)) from error
        spec = reply["spec"]
        if split_env_id(spec["env_id"])[1] != split_env_id(self.env_id)[1]:
            raise SimulatorError(f"simulator serves {spec['env_id']}, expected {self.env_id}")
        if self.version is not None and spec["env_version"] != self.version:
            raise SimulatorError(
                f"simulator version changed from {self.version} to {spec['env_version']}"
            )
        self.version, self.reply = spec["env_version"], reply

    def send(self, message: dict[str, Any]) -> None:
        if self._sock is None:
            raise ConnectionError("not connected")
        send(self._sock, message)

    def receive(self) -> dict[str, Any]:
        """The reply to what was sent; SimulatorError if it says ``ok: false``."""
        if self._sock is None:
            raise ConnectionError("not connected")
        reply = receive(self._sock)
        if not reply.get("ok"):
            raise SimulatorError(str(reply.get("error", "the simulator refused the request")))
        return reply

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.receive()

    def drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self.call({"op": "close"})
            except (*FAILURES, SimulatorError):
                pass
            self.drop()


class RemoteEnv(gym.Env):
    """A one-env session with a simulator server (protocol 1)."""

    def __init__(
        self,
        env_id: str,
        address: Callable[[], str],
        timeout_s: float = 30.0,
        connect_retries: int = 20,
    ) -> None:
        self.env_id = env_id
        self.failures = 0
        self._last_obs: Any = None
        self._state_key: Any = None
        self._reachable: int | None = None
        hello = {"op": "hello", "protocol": PROTOCOL_VERSION}
        self._link = Connection(env_id, address, hello, timeout_s, connect_retries)
        spec = self._link.spec
        self.observation_space = space_from_json(spec["observation_space"])
        self.action_space = space_from_json(spec["action_space"])
        self.declarations = Declarations.from_json({**spec, "version": self.version})
        self.reward_components = self.declarations.reward_components

    @property
    def version(self) -> str | None:
        return self._link.version

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        return self._link.call(message)

    def _recover(self, error: Exception) -> None:
        self.failures += 1
        log.warning("simulator %s failed (%s); reconnecting", self.env_id, error)
        self._link.open()

    # -- Gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        message = {"op": "reset", "seed": seed, "options": options}
        try:
            reply = self._call(message)
        except FAILURES as error:
            self._recover(error)
            reply = self._call(message)
        self._last_obs = as_space(self.observation_space, reply["obs"])
        self._state_key = _hashable(reply.get("state_key"))
        self._reachable = reply.get("reachable_states")
        return self._last_obs, reply["info"]

    def step(self, action):
        try:
            reply = self._call({"op": "step", "action": action})
        except FAILURES as error:
            self._recover(error)
            parts = dict.fromkeys(self.reward_components, 0.0)
            info = {"simulator_failure": True, "reward_components": parts}
            return self._last_obs, 0.0, False, True, info
        self._last_obs = as_space(self.observation_space, reply["obs"])
        self._state_key = _hashable(reply.get("state_key"))
        info = reply["info"]
        return self._last_obs, reply["reward"], reply["terminated"], reply["truncated"], info

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
        self._link.close()


Step = tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


class BatchSession:
    """A batched session (protocol 2): ``num_envs`` envs on one server, reset and
    stepped by one message each, with SAME_STEP autoreset on the server.

    A step is split in :meth:`send_step` and :meth:`receive_step`, so a caller can
    compute while the server steps. When the server dies or stays silent, the session
    reconnects (a relaunch in ``launch`` mode), resets its envs with the ``reset_seeds``
    of the step it lost and returns every env's episode as cut: the last good
    observation as ``final_obs``, reward 0, ``truncated``, ``simulator_failure``."""

    def __init__(
        self,
        env_id: str,
        address: Callable[[], str],
        num_envs: int,
        timeout_s: float = 30.0,
        connect_retries: int = 20,
        vector: bool = True,
    ) -> None:
        self.env_id, self.num_envs, self.failures = env_id, num_envs, 0
        hello = {"op": "hello", "protocol": BATCHED_PROTOCOL, "num_envs": num_envs}
        self._link = Connection(
            env_id, address, {**hello, "vector": vector}, timeout_s, connect_retries
        )
        spec = self._link.spec
        self.vectorized = bool(self._link.reply.get("vectorized", False))
        self.single_observation_space = space_from_json(spec["observation_space"])
        self.single_action_space = space_from_json(spec["action_space"])
        self.declarations = Declarations.from_json({**spec, "version": self.version})
        self._obs: Any = None  # the observations the envs are in
        self._reset_seeds: list[int | None] | None = None  # of the step in flight
        self._lost: Exception | None = None  # a failure while sending it

    @property
    def version(self) -> str | None:
        return self._link.version

    def reset(self, seeds: Sequence[int | None] | None = None) -> tuple[Any, dict[str, Any]]:
        message = {"op": "reset_batch", "seeds": _plain_seeds(seeds), "options": None}
        try:
            reply = self._link.call(message)
        except FAILURES as error:
            self._reconnect(error)
            reply = self._link.call(message)
        self._obs = as_space(self.single_observation_space, reply["obs"])
        return self._obs, reply["info"]

    def send_step(self, actions: np.ndarray, reset_seeds: Sequence[int | None] | None = None):
        """Start a step: each env's action, and the seed each env whose episode ends
        starts its next one with (None: the server's envs continue their worlds)."""
        self._reset_seeds = _plain_seeds(reset_seeds)
        message = {"op": "step_batch", "actions": np.asarray(actions)}
        try:
            self._link.send({**message, "reset_seeds": self._reset_seeds})
        except FAILURES as error:  # reported by receive_step, as a cut
            self._lost = error

    def receive_step(self) -> Step:
        """The step :meth:`send_step` started: obs, rewards, terminated, truncated, info."""
        lost, self._lost = self._lost, None
        try:
            if lost is not None:
                raise lost
            reply = self._link.receive()
        except FAILURES as error:
            return self._cut(error)
        space = self.single_observation_space
        self._obs = as_space(space, reply["obs"])
        info = reply["info"]
        if "final_obs" in info:
            info["final_obs"] = as_space(space, info["final_obs"])
        return self._obs, reply["rewards"], reply["terminated"], reply["truncated"], info

    def step(self, actions: np.ndarray, reset_seeds: Sequence[int | None] | None = None) -> Step:
        self.send_step(actions, reset_seeds)
        return self.receive_step()

    def _reconnect(self, error: Exception) -> None:
        self.failures += 1
        log.warning("simulator %s failed (%s); reconnecting", self.env_id, error)
        self._link.open()

    def _cut(self, error: Exception) -> Step:
        """Every env's episode ends here, cut; the new session's envs start new ones."""
        final = self._obs
        self._reconnect(error)
        message = {"op": "reset_batch", "seeds": self._reset_seeds, "options": None}
        reply = self._link.call(message)  # a second failure raises
        self._obs = as_space(self.single_observation_space, reply["obs"])
        n = self.num_envs
        everyone = np.ones(n, dtype=bool)
        info: dict[str, Any] = {
            "simulator_failure": everyone,
            "_simulator_failure": everyone,
            "final_obs": final,
            "_final_obs": everyone,
            "reset_info": reply["info"],
        }
        if self.declarations.reward_components:
            zeros = {name: np.zeros(n) for name in self.declarations.reward_components}
            info["reward_components"] = zeros
        if MASK_KEY in reply["info"]:
            info[MASK_KEY] = reply["info"][MASK_KEY]
        return self._obs, np.zeros(n), np.zeros(n, dtype=bool), everyone.copy(), info

    def close(self) -> None:
        self._link.close()


def as_space(space: gym.Space, value: Any) -> Any:
    """A decoded observation (or batch) in its space's structure: msgpack has no tuple,
    so a ``Tuple`` space's parts arrive as a list."""
    if isinstance(space, spaces.Tuple):
        return tuple(as_space(s, v) for s, v in zip(space.spaces, value, strict=True))
    if isinstance(space, spaces.Dict):
        return {key: as_space(s, value[key]) for key, s in space.spaces.items()}
    return value


def _plain_seeds(seeds: Sequence[int | None] | None) -> list[int | None] | None:
    return None if seeds is None else [None if s is None else int(s) for s in seeds]


def _hashable(value: Any) -> Any:
    """A state key as it was before msgpack turned its tuples into lists."""
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value
