"""Serve a checkpoint locally: ``python -m serving CHECKPOINT_OR_RUN [options]``.

Starts a local Ray (or joins ``--address``), Serve's HTTP proxy on ``--host``/``--port``
(127.0.0.1:8000 by default) and the policy server; prints the URL and blocks until
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from serving.settings import HTTP_OPTIONS, ServeArgs, serve_environment
from serving.source import parse_source
from serving.web import read_token

logger = logging.getLogger("serving")

APP_NAME = "turnwise"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint dir, run dir, store path or s3:// URI")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--pointer", choices=("best", "latest"), default="best")
    parser.add_argument("--token-env", help="env var holding the bearer token clients must send")
    parser.add_argument("--watch-interval", type=float, default=10.0, help="seconds; 0: off")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=128, help="rows per forward")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0, help="to fill a batch")
    parser.add_argument("--address", default="", help="Ray address to join (default: local)")
    parser.add_argument("--max-sessions", type=int, default=10_000, help="open sessions at once")
    parser.add_argument("--session-idle-ttl", type=float, default=300.0, help="seconds")
    return parser.parse_args(argv)


def serve_args(args: argparse.Namespace) -> ServeArgs:
    return ServeArgs(
        checkpoint=args.checkpoint,
        pointer=args.pointer,
        token_env=args.token_env,
        watch_interval_s=args.watch_interval,
        max_batch_size=args.max_batch_size,
        max_request_rows=min(128, args.max_batch_size),
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        deployment={"num_replicas": args.replicas},
        sessions={"max_sessions": args.max_sessions, "idle_ttl_s": args.session_idle_ttl},
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        options = serve_args(args)
        source = parse_source(args.checkpoint, args.pointer)  # fail fast, before Ray starts
        read_token(args.token_env)
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    if not _is_loopback(args.host) and not args.token_env:
        logger.warning(
            "binding %s without --token-env: anyone who can reach it may call it", args.host
        )
    logger.info("serving from %s", source.describe())

    env_vars = serve_environment()  # before ray.serve is imported (its constants read it)
    import ray
    from ray import serve

    from serving.app import build_app

    # "local": never join a stray cluster. On a joined cluster whose Serve already runs,
    # its controller and proxies keep the mode they were started with.
    ray.init(address=args.address or "local", runtime_env={"env_vars": env_vars})
    try:
        serve.start(http_options={"host": args.host, "port": args.port, **HTTP_OPTIONS})
        serve.run(build_app(options), name=APP_NAME, route_prefix="/")
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{args.port}"
        print(f"turnwise policy server at {url}  (POST /v1/act, GET /v1/policy /healthz /metrics)")
        if os.environ.get("RAY_SERVE_LOG_TO_STDERR") != "1":  # the mode's default: files only
            logs = "/tmp/ray/session_latest/logs/serve/"
            print(f"replica logs in {logs} (here too with RAY_SERVE_LOG_TO_STDERR=1)")
        print("Ctrl-C to stop", flush=True)
        _wait_for_signal()
    finally:
        if args.address:  # a shared cluster: remove only this application
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
