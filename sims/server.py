"""``python -m sims.server --env Warehouse-v0 --port N``: serve any Gymnasium env over TCP.

``--env`` takes any id turnwise does, a user's own ``package.module:EnvId`` included.
The wire protocol is in docs/simulator-protocol.md.

Each connection gets its own env instance (so one server process can feed all of
a rollout actor's envs). Binds 127.0.0.1 unless ``--host`` says otherwise. With
``--port 0`` it picks a free port; the first line on stdout is always
``listening on HOST:PORT`` so a launcher can read it.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import socketserver
import sys
from typing import Any

import gymnasium

from sims.declarations import Declarations, declarations
from sims.protocol import PROTOCOL_VERSION, ProtocolError, pack, receive, send
from sims.registry import env_spec
from sims.versioning import env_version
from turnwise.spaces import space_to_json

log = logging.getLogger("sims.server")


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


class Session(socketserver.BaseRequestHandler):
    """One client, one env: handshake, then reset/step/close until the client leaves."""

    def handle(self) -> None:
        server: SimulatorServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        env = gymnasium.make(server.env_id, **server.env_kwargs)
        try:
            if self._handshake(sock):
                self._serve(sock, env)
        except (ConnectionError, ProtocolError, OSError) as error:
            log.info("session %s ended: %s", self.client_address, error)
        finally:
            env.close()

    def _handshake(self, sock: socket.socket) -> bool:
        hello = receive(sock)
        if hello.get("op") != "hello" or hello.get("protocol") != PROTOCOL_VERSION:
            send(
                sock,
                {
                    "ok": False,
                    "error": f"expected hello with protocol {PROTOCOL_VERSION}, "
                    f"got {_brief(hello)}",
                },
            )
            return False
        server: SimulatorServer = self.server  # type: ignore[assignment]
        send(
            sock,
            {
                "ok": True,
                "protocol": PROTOCOL_VERSION,
                "spec": server.spec,
            },
        )
        return True

    def _serve(self, sock: socket.socket, env: gymnasium.Env) -> None:
        declared = declarations(env)
        while True:
            request = receive(sock)
            op = request.get("op")
            if op == "close":
                send(sock, {"ok": True})
                return
            try:  # the env's own errors and an unencodable reply too: the session goes on
                frame = pack({"ok": True, **self._dispatch(env, declared, op, request)})
            except Exception as error:
                frame = pack({"ok": False, "error": f"{op}: {type(error).__name__}: {error}"})
            sock.sendall(frame)

    @staticmethod
    def _dispatch(
        env: gymnasium.Env, declared: Declarations, op: Any, request: dict[str, Any]
    ) -> dict[str, Any]:
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


def _state_key(base: Any, declared: Declarations) -> dict[str, Any]:
    return {"state_key": base.state_key()} if declared.state_key else {}


def _brief(message: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in message.items() if isinstance(v, str | int)})[:200]


class SimulatorServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], host: str, port: int) -> None:
        env_spec(env_id)  # imports a plug-in env's module; EnvIdError names what is wrong
        self.env_id, self.env_kwargs = env_id, env_kwargs
        probe = gymnasium.make(env_id, **env_kwargs)  # bad kwargs fail now, not per session
        self.spec = session_spec(probe, env_id, env_kwargs)  # the same for every session
        probe.close()
        super().__init__((host, port), Session)


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        server = SimulatorServer(args.env, json.loads(args.env_kwargs), args.host, args.port)
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
