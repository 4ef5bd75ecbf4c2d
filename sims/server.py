"""``python -m sims.server --env Warehouse-v0 --port N``: serve any Gymnasium env over TCP.

``--env`` takes any id turnwise does, a user's own ``package.module:EnvId`` included.
The wire protocol is in docs/simulator-protocol.md.

Each connection is a session with its own envs: one env (protocol 1, what the
evaluator and ``sims.check`` open), or a batch of ``num_envs`` stepped by one message
(protocol 2, what a rollout actor opens, one session per group of its envs). A batch
is the env's own batched implementation (its ``vector_entry_point``, Warehouse-v0's
``WarehouseVectorEnv``) where it has one that follows the actors' contract, else an
:class:`EnvLoop` over single envs. Binds 127.0.0.1 unless ``--host`` says otherwise.
With ``--port 0`` it picks a free port; the first line on stdout is always
``listening on HOST:PORT`` so a launcher can read it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import socket
import socketserver
import sys
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from sims.declarations import Declarations, declarations
from sims.protocol import BATCHED_PROTOCOL, PROTOCOLS, ProtocolError, pack, receive, send
from sims.registry import env_spec
from sims.versioning import env_version
from turnwise.spaces import space_to_json

log = logging.getLogger("sims.server")

MAX_BATCH_ENVS = 4096  # envs in one batched session
MASK_KEY = "action_mask"  # a legal-action mask in info (turnwise.policy.observations)

Dispatch = Callable[[Any, dict[str, Any]], dict[str, Any]]


def session_spec(env: gymnasium.Env, env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a client needs to stand in for the env: spaces, version, declarations."""
    version, _ = env_version(env_id, kwargs, env)
    return {
        **declarations(env).to_json(),
        "env_id": env_id,
        "env_version": version,
        "observation_space": space_to_json(env.observation_space),
        "action_space": space_to_json(env.action_space),
    }


# -- the envs of a batched session (the in-process actor uses the same classes) --------
def follows_contract(vec: VectorEnv) -> bool:
    """A batched env is used as is only if it autoresets on the same step and declares
    its state (so it can report what re-creates each episode)."""
    same_step = vec.metadata.get("autoreset_mode") == AutoresetMode.SAME_STEP
    return same_step and hasattr(vec, "state_variables")


class EnvLoop(VectorEnv):
    """Single envs stepped one after another, with SAME_STEP autoreset: an env whose
    episode ends on a step is reset on that step with the seed given for it in
    ``step(actions, reset_seeds)`` (None, or no ``reset_seeds``: it continues its
    world). The ended episode's last observation is in ``info["final_obs"]`` (valid
    where ``info["_final_obs"]``), the new episodes' reset info in ``info["reset_info"]``.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_fns: Sequence[Callable[[], gymnasium.Env]]) -> None:
        self._inner = SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.DISABLED)
        self.envs = self._inner.envs
        self.num_envs = self._inner.num_envs
        self.single_observation_space = self._inner.single_observation_space
        self.single_action_space = self._inner.single_action_space
        self.observation_space = self._inner.observation_space
        self.action_space = self._inner.action_space

    def reset(self, *, seed=None, options=None):
        return self._inner.reset(seed=seed, options=options)

    def step(self, actions, reset_seeds: Sequence[int | None] | None = None):
        obs, rewards, terminated, truncated, info = self._inner.step(actions)
        done = terminated | truncated
        if done.any():
            info["final_obs"] = where_rows(done, obs, zeros_like_rows(obs))
            info["_final_obs"] = done
            given = [None] * self.num_envs if reset_seeds is None else list(reset_seeds)
            seeds = [
                None if s is None or not d else int(s) for s, d in zip(given, done, strict=True)
            ]
            new_obs, reset_info = self._inner.reset(seed=seeds, options={"reset_mask": done})
            obs = where_rows(done, new_obs, obs)
            if MASK_KEY in reset_info:  # the mask of each new episode's first observation
                info[MASK_KEY] = where_rows(done, reset_info[MASK_KEY], info[MASK_KEY])
            info["reset_info"] = reset_info
        return obs, rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self._inner.close()


def where_rows(rows: np.ndarray, new: Any, old: Any) -> Any:
    """``new`` where ``rows`` (N,) is True, else ``old``, for arrays and Dict/Tuple
    batches alike."""
    if isinstance(new, dict):
        return {k: where_rows(rows, new[k], old[k]) for k in new}
    if isinstance(new, tuple):
        return tuple(where_rows(rows, n, o) for n, o in zip(new, old, strict=True))
    new = np.asarray(new)
    return np.where(rows.reshape(-1, *([1] * (new.ndim - 1))), new, old)


def zeros_like_rows(batch: Any) -> Any:
    if isinstance(batch, dict):
        return {k: zeros_like_rows(v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(zeros_like_rows(v) for v in batch)
    return np.zeros_like(batch)


def batch_envs(
    env_id: str, kwargs: dict[str, Any], num_envs: int, vector: bool = True
) -> tuple[VectorEnv, bool]:
    """``num_envs`` envs as one: the env's batched implementation where it has one that
    follows the contract (and ``vector``), else an :class:`EnvLoop`; and which it is."""
    spec = env_spec(env_id)
    if vector and spec.vector_entry_point:
        batched = gymnasium.make_vec(
            spec, num_envs, vectorization_mode="vector_entry_point", **kwargs
        ).unwrapped
        if follows_contract(batched):
            return batched, True
        batched.close()
    return EnvLoop([lambda: gymnasium.make(env_id, **kwargs)] * num_envs), False


# -- sessions ---------------------------------------------------------------------------
class Session(socketserver.BaseRequestHandler):
    """One client: a handshake that says which session (one env or a batch), then its
    requests until ``close``."""

    def handle(self) -> None:
        server: SimulatorServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello = receive(sock)
            refusal = server.refusal(hello)
            if refusal:
                send(sock, {"ok": False, "error": refusal})
                return
            if hello.get("num_envs") is None:
                self._one_env(sock, server, hello)
            else:
                self._batch(sock, server, hello)
        except (ConnectionError, ProtocolError, OSError) as error:
            log.info("session %s ended: %s", self.client_address, error)

    @staticmethod
    def _one_env(sock: socket.socket, server: SimulatorServer, hello: dict[str, Any]) -> None:
        env = gymnasium.make(server.env_id, **server.env_kwargs)
        try:
            send(sock, {"ok": True, "protocol": hello["protocol"], "spec": server.spec})
            serve(sock, functools.partial(dispatch_one, env, declarations(env)))
        finally:
            env.close()

    @staticmethod
    def _batch(sock: socket.socket, server: SimulatorServer, hello: dict[str, Any]) -> None:
        try:
            envs, vectorized = batch_envs(
                server.env_id, server.env_kwargs, hello["num_envs"], bool(hello.get("vector", True))
            )
        except Exception as error:  # the env cannot be batched: say why, then close
            send(sock, {"ok": False, "error": f"hello: {type(error).__name__}: {error}"})
            return
        try:
            reply = {"ok": True, "protocol": hello["protocol"], "spec": server.spec}
            send(sock, {**reply, "num_envs": envs.num_envs, "vectorized": vectorized})
            seeded = not vectorized and not server.spec.get("reset_options")
            serve(sock, functools.partial(dispatch_batch, envs, seeded))
        finally:
            envs.close()


def serve(sock: socket.socket, dispatch: Dispatch) -> None:
    """Answer requests until ``close``; a request that fails gets ``ok: false`` and the
    session goes on (the env's own errors and an unencodable reply too)."""
    while True:
        request = receive(sock)
        op = request.get("op")
        if op == "close":
            send(sock, {"ok": True})
            return
        try:
            frame = pack({"ok": True, **dispatch(op, request)})
        except Exception as error:
            frame = pack({"ok": False, "error": f"{op}: {type(error).__name__}: {error}"})
        sock.sendall(frame)


def dispatch_one(
    env: gymnasium.Env, declared: Declarations, op: Any, request: dict[str, Any]
) -> dict[str, Any]:
    """The reply to one request of a one-env session."""
    base = env.unwrapped
    if op == "reset":
        obs, info = env.reset(seed=request.get("seed"), options=request.get("options"))
        reply = {"obs": obs, "info": info, **_state_key(base, declared)}
        if declared.reachable_states:
            reply["reachable_states"] = int(base.reachable_state_count())
        return reply
    if op == "step":
        action = request["action"]
        if not env.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {env.action_space}")
        obs, reward, terminated, truncated, info = env.step(action)
        return {
            "obs": obs,
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "info": info,
            **_state_key(base, declared),
        }
    if op == "oracle_action":
        if not declared.oracle:
            raise ValueError(f"{type(base).__name__} declares no oracle_action()")
        return {"action": base.oracle_action()}
    raise ValueError(f"unknown op {op!r}; expected reset, step, oracle_action or close")


def dispatch_batch(
    envs: VectorEnv, seeded: bool, op: Any, request: dict[str, Any]
) -> dict[str, Any]:
    """The reply to one request of a batched session; ``seeded``: an ended env starts
    its next episode with the seed the request gives it (else it continues its world)."""
    n = envs.num_envs
    if op == "reset_batch":
        seeds = _seeds(request.get("seeds"), n) or [None] * n
        obs, info = envs.reset(seed=seeds, options=request.get("options") or None)
        return {"obs": obs, "info": info}
    if op == "step_batch":
        actions = _actions(envs, request["actions"])
        if isinstance(envs, EnvLoop):
            seeds = _seeds(request.get("reset_seeds"), n) if seeded else None
            result = envs.step(actions, seeds)
        else:  # the env's batched implementation autoresets by itself
            result = envs.step(actions)
        obs, rewards, terminated, truncated, info = result
        return {
            "obs": obs,
            "rewards": np.asarray(rewards, dtype=np.float64),
            "terminated": np.asarray(terminated, dtype=bool),
            "truncated": np.asarray(truncated, dtype=bool),
            "info": info,
        }
    raise ValueError(f"unknown op {op!r}; expected reset_batch, step_batch or close")


def _seeds(seeds: Any, n: int) -> list[int | None] | None:
    if seeds is None:
        return None
    seeds = list(seeds)
    if len(seeds) != n or not all(s is None or isinstance(s, int) for s in seeds):
        raise ValueError(f"expected {n} seeds (int or nil), got {seeds!r:.80}")
    return seeds


def _actions(envs: VectorEnv, actions: Any) -> np.ndarray:
    actions = np.asarray(actions)
    if not envs.action_space.contains(actions):
        shown = np.array2string(actions, threshold=8)
        raise ValueError(f"actions {shown} ({actions.dtype}) are not in {envs.action_space}")
    return actions


def _state_key(base: Any, declared: Declarations) -> dict[str, Any]:
    return {"state_key": base.state_key()} if declared.state_key else {}


def _brief(message: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in message.items() if isinstance(v, str | int)})[:200]


class SimulatorServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        host: str,
        port: int,
        protocols: Sequence[int] = PROTOCOLS,
    ) -> None:
        env_spec(env_id)  # imports a plug-in env's module; EnvIdError names what is wrong
        self.env_id, self.env_kwargs, self.protocols = env_id, env_kwargs, tuple(protocols)
        probe = gymnasium.make(env_id, **env_kwargs)  # bad kwargs fail now, not per session
        self.spec = session_spec(probe, env_id, env_kwargs)  # the same for every session
        probe.close()
        super().__init__((host, port), Session)

    def refusal(self, hello: dict[str, Any]) -> str | None:
        """Why a first message opens no session (None: it does)."""
        spoken = " or ".join(str(p) for p in self.protocols)
        if hello.get("op") != "hello" or hello.get("protocol") not in self.protocols:
            return f"expected hello with protocol {spoken}, got {_brief(hello)}"
        envs = hello.get("num_envs")
        if envs is None:
            return None
        if hello["protocol"] < BATCHED_PROTOCOL:
            return f"num_envs needs protocol {BATCHED_PROTOCOL}, got {_brief(hello)}"
        if not isinstance(envs, int) or isinstance(envs, bool) or not 1 <= envs <= MAX_BATCH_ENVS:
            return f"num_envs must be an int from 1 to {MAX_BATCH_ENVS}, got {envs!r:.40}"
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sims.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--env", required=True, help="a Gymnasium env id, or package.module:EnvId for your own"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address")
    parser.add_argument("--env-kwargs", default="{}", help="JSON object of env keyword arguments")
    parser.add_argument(
        "--protocol",
        type=int,
        choices=PROTOCOLS,
        default=max(PROTOCOLS),
        help="the newest protocol to speak (1: one env per session, as a server that "
        "predates batched sessions; clients then fall back to it)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    protocols = [p for p in PROTOCOLS if p <= args.protocol]
    try:
        server = SimulatorServer(
            args.env, json.loads(args.env_kwargs), args.host, args.port, protocols
        )
    except (ValueError, TypeError, json.JSONDecodeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
