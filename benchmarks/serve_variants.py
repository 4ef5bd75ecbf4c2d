"""Serving variants side by side: Ray Serve's modes and ingresses, alternated in rounds.

``python -m benchmarks.serve_latency --only variants [--variants MODE ...] [--rounds 3]
[--cell-seconds 5]`` starts, round after round, one local Ray Serve per mode (each in its
own process, so its environment is set before any Serve constant is read), with both
turnwise (``serving.app:build_app``, its defaults) and a no-op deployment, and measures
each of the mode's targets at concurrency 1, 8 and 32:

- modes: ``default`` (as ``python -m serving`` ran before), ``optimized``
  (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``), ``optimized_proxy`` (that, with
  ``RAY_SERVE_ENABLE_DIRECT_INGRESS=0``: every request through Serve's proxy);
- targets: ``turnwise_http`` (turnwise through Serve's HTTP proxy), ``noop_http`` and
  ``noop_grpc`` (the no-op deployment through Serve's HTTP and gRPC proxies: the two
  ingresses' own cost), and in ``optimized`` ``turnwise_direct`` (the turnwise
  replica's own direct-ingress HTTP port, no proxy).

Each server reads Serve's constants inside the turnwise replica (``__ray_call__``) and
reports them, so the table shows that the mode took effect where requests are served.
The gRPC messages are built from :data:`PROTO` at import (no ``grpcio-tools`` needed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import Request  # a module global: FastAPI resolves the route's annotation
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal import builder

from serving.testing import SERVE_MODE_CONSTANTS

log = logging.getLogger("benchmarks.serve_variants")
WARMUP_NOTE = "50 warm-up requests"

REPO = Path(__file__).resolve().parent.parent
OPTIMIZED = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
MODES: dict[str, dict[str, str]] = {
    "default": {},
    "optimized": OPTIMIZED,
    "optimized_proxy": {**OPTIMIZED, "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"},
}
TARGETS = {
    "turnwise_http": "turnwise, HTTP via Serve's proxy",
    "turnwise_direct": "turnwise, HTTP to the replica's direct-ingress port",
    "noop_http": "no-op deployment, HTTP via Serve's proxy",
    "noop_grpc": "no-op deployment, gRPC via Serve's gRPC proxy",
}
PROTO = """\
syntax = "proto3";
package turnwise.bench;
message ActRequest { repeated float observation = 1; }
message ActReply { int64 action = 1; }
service Policy { rpc Act (ActRequest) returns (ActReply); }
"""
SERVICE, METHOD = "turnwise.bench.Policy", "/turnwise.bench.Policy/Act"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """:data:`PROTO` as protoc would compile it."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="turnwise_bench.proto", package="turnwise.bench", syntax="proto3"
    )
    request = proto.message_type.add(name="ActRequest")
    request.field.add(
        name="observation", number=1, type=field.TYPE_FLOAT, label=field.LABEL_REPEATED
    )
    answer = proto.message_type.add(name="ActReply")
    answer.field.add(name="action", number=1, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    service = proto.service.add(name="Policy")
    service.method.add(
        name="Act", input_type=".turnwise.bench.ActRequest", output_type=".turnwise.bench.ActReply"
    )
    return proto


# As a protoc-generated *_pb2 module does: module-level classes, so they pickle by name.
_DESCRIPTOR = descriptor_pool.Default().AddSerializedFile(_file_descriptor().SerializeToString())
builder.BuildMessageAndEnumDescriptors(_DESCRIPTOR, globals())
builder.BuildTopDescriptorsAndMessages(_DESCRIPTOR, __name__, globals())
ActRequest: Any = globals()["ActRequest"]
ActReply: Any = globals()["ActReply"]


def add_policy_servicer(servicer: Any, server: Any) -> None:
    """What grpcio-tools would generate as ``add_PolicyServicer_to_server``."""
    import grpc

    handlers = {
        "Act": grpc.unary_unary_rpc_method_handler(
            servicer.Act,
            request_deserializer=ActRequest.FromString,
            response_serializer=ActReply.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def noop_app():
    """Serve's own floor over both ingresses: reads the request, returns a constant."""
    from fastapi import FastAPI
    from ray import serve

    app = FastAPI()

    @app.post("/v1/act")
    async def act(request: Request) -> dict[str, int]:
        await request.body()
        return {"action": 0}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    class Noop:
        async def Act(self, request: Any) -> Any:  # the gRPC method's name
            return ActReply(action=0)

    deployment = serve.deployment(serve.ingress(app)(Noop), name="Noop")
    return deployment.options(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0}).bind()


# -- the server process ----------------------------------------------------------------------
def _probe(actor: Any) -> dict[str, Any]:
    """Inside a replica actor: Serve's constants, the event loop, the direct-ingress port."""
    import asyncio

    from serving.testing import serve_constants

    policy = type(asyncio.get_event_loop_policy())
    return {
        "constants": serve_constants(),
        "event_loop_policy": f"{policy.__module__}.{policy.__name__}",
        "direct_port": getattr(actor._replica_impl, "_http_port", None),
    }


def run_server(mode: str, checkpoint: str, port: int, grpc_port: int, ready: Path) -> None:
    """A local Ray Serve in ``mode`` (its env already in ``os.environ``), turnwise at ``/``
    and the no-op at ``/noop``; writes the probe to ``ready``, serves until SIGTERM."""
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from serving.app import build_app
    from serving.settings import HTTP_OPTIONS

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": MODES[mode]} if MODES[mode] else None,
    )
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": port, **HTTP_OPTIONS},
            grpc_options=gRPCOptions(
                port=grpc_port, grpc_servicer_functions=[f"{__name__}.add_policy_servicer"]
            ),
        )
        serve.run(build_app({"checkpoint": checkpoint}), name="turnwise", route_prefix="/")
        serve.run(noop_app(), name="noop", route_prefix="/noop")
        actor = next(
            ray.get_actor(a["name"], namespace=a["namespace"])
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::turnwise#PolicyServer#")
        )
        probe = json.dumps(ray.get(actor.__ray_call__.remote(_probe), timeout=60))
        ready.with_suffix(".part").write_text(probe)
        ready.with_suffix(".part").replace(ready)  # whole or absent
        stop.wait()
    finally:
        ray.shutdown()  # not serve.shutdown(): direct ingress drains replicas for >= 30 s


class Server:
    """One mode's server process, from start until ``close``."""

    def __init__(self, mode: str, checkpoint: str, timeout_s: float = 240.0) -> None:
        from benchmarks.serve_latency import _free_port, wait_ready

        self.mode, self.port, self.grpc_port = mode, _free_port(), _free_port()
        ready = Path(tempfile.mkdtemp(prefix="turnwise-variant-")) / "ready.json"
        command = [sys.executable, "-m", "benchmarks.serve_latency", "--serve-server", mode]
        command += ["--checkpoint", checkpoint, "--port", str(self.port)]
        command += ["--grpc-port", str(self.grpc_port), "--ready-file", str(ready)]
        # exactly the mode's variables, whatever this shell has set of Serve's
        env = {k: v for k, v in os.environ.items() if k not in SERVE_MODE_CONSTANTS}
        env.update(MODES[mode])
        self.process = subprocess.Popen(command, cwd=REPO, env=env)
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the {mode} server did not start")
            time.sleep(0.5)
        self.probe = json.loads(ready.read_text())
        wait_ready(f"http://127.0.0.1:{self.port}/healthz")

    def targets(self) -> list[str]:
        direct = self.probe["constants"]["RAY_SERVE_ENABLE_DIRECT_INGRESS"]
        return [t for t in TARGETS if t != "turnwise_direct" or direct]

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- load -----------------------------------------------------------------------------------------
async def _grpc_run(port: int, requests: list[Any], concurrency: int, seconds: float, n: int):
    """Closed-loop gRPC clients until ``n`` requests or ``seconds`` have passed."""
    import grpc

    metadata = (("application", "noop"),)
    latencies, errors, counter = [], 0, itertools.count()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        act = channel.unary_unary(
            METHOD,
            request_serializer=ActRequest.SerializeToString,
            response_deserializer=ActReply.FromString,
        )

        async def worker() -> None:
            nonlocal errors
            while (i := next(counter)) < n and time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    await act(requests[i % len(requests)], metadata=metadata)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start, errors


def measure_target(server: Server, target: str, obs, bodies, concurrency: int, seconds: float):
    from benchmarks.serve_latency import WARMUP, _http_run, summarize

    if target == "noop_grpc":
        requests = [ActRequest(observation=row.tolist()) for row in obs]

        def run(s: float, n: int):
            return asyncio.run(_grpc_run(server.grpc_port, requests, concurrency, s, n))
    else:
        port = server.probe["direct_port"] if target == "turnwise_direct" else server.port
        url = f"http://127.0.0.1:{port}{'/noop' if target == 'noop_http' else ''}/v1/act"

        def run(s: float, n: int):
            return asyncio.run(_http_run(url, bodies, concurrency, n, s))

    run(60.0, WARMUP)
    return summarize(*run(seconds, 10**9))


def measure_variants(
    checkpoint: str, obs, bodies, modes: list[str], rounds: int, seconds: float
) -> dict[str, Any]:
    """``rounds`` rounds; in each, every mode's server in turn, each target at each
    concurrency for ``seconds``. Rows per (mode, target, concurrency, round)."""
    from benchmarks.report import load_average
    from benchmarks.serve_latency import CONCURRENCY

    rows, probes, loads = [], {}, []
    for round_ in range(rounds):
        order = modes if round_ % 2 == 0 else modes[::-1]  # no mode always first
        for mode in order:
            loads.append((load_average() or [float("nan")])[0])
            log.info("round %d: %s", round_ + 1, mode)
            server = Server(mode, checkpoint)
            try:
                probes[mode] = server.probe
                for target in server.targets():
                    for concurrency in CONCURRENCY:
                        cell = measure_target(server, target, obs, bodies, concurrency, seconds)
                        log.info("  %s c=%d: %s", target, concurrency, _brief(cell))
                        rows.append(
                            dict(mode=mode, target=target, concurrency=concurrency,
                                 round=round_, **cell)
                        )  # fmt: skip
            finally:
                server.close()
    loads.append((load_average() or [float("nan")])[0])
    return {"rows": rows, "probes": probes, "load_1min": loads, "rounds": rounds,
            "cell_seconds": seconds, "modes": modes}  # fmt: skip


def _brief(cell: dict[str, Any]) -> str:
    return (
        f"p50 {cell['p50_ms']:.1f} ms, p99 {cell['p99_ms']:.1f} ms, "
        f"{cell['throughput_rps']:.0f}/s, {cell['errors']} errors"
    )


# -- report ------------------------------------------------------------------------------------
def summarize_variants(measured: dict[str, Any]) -> list[dict[str, Any]]:
    """Median and range over the rounds of each (mode, target, concurrency)."""
    from benchmarks.alternating import spread

    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in measured["rows"]:
        groups.setdefault((row["mode"], row["target"], row["concurrency"]), []).append(row)
    return [
        {
            "mode": mode,
            "target": target,
            "concurrency": concurrency,
            "rounds": len(rows),
            "errors": sum(r["errors"] for r in rows),
            **{
                key: spread([r[key] for r in rows])
                for key in ("p50_ms", "p99_ms", "throughput_rps")
            },
        }
        for (mode, target, concurrency), rows in groups.items()
    ]


def render_variants(report: dict[str, Any]) -> str:
    """The ``serve_latency_variants`` section of BENCHMARKS.md."""
    from benchmarks.alternating import cell

    measured, m = report["variants"], report["machine"]
    loads = [x for x in measured["load_1min"] if x == x]
    lines = [
        "<!-- serve_latency_variants:begin -->",
        "### Serving: Ray Serve's modes and ingresses, alternated",
        "",
        f"{measured['rounds']} rounds; in each, one local Ray Serve per mode in turn (its own "
        "process, the mode's environment set before Ray starts and in its runtime_env), "
        "with turnwise at its defaults and a no-op deployment on it; each target at each "
        f"concurrency for {measured['cell_seconds']:g} s after {WARMUP_NOTE}. One observation "
        "per request, client-side latency; median over the rounds, (min to max) when they "
        "differ. Produced by:",
        "",
        f"```\n{report['command']}\n```",
        "",
        f"- Machine: {m['cpu_model']}, {m['cpu_count']} logical CPUs, shared with other "
        f"work; Ray {m['ray']}. Load average (1 min) at each server start and at the end: "
        + (f"{min(loads):.1f} to {max(loads):.1f}" if loads else "not available"),
        f"- Date: {report['date']}",
        "",
        "Modes: `default`, Ray Serve's defaults (how `python -m serving` ran Serve before); "
        "`optimized`, `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`; `optimized_proxy`, that with "
        "`RAY_SERVE_ENABLE_DIRECT_INGRESS=0`, which is `serving.settings.SERVE_ENV`: what "
        "`python -m serving`, the tests and the RayService's pods run now.",
        "",
        "| mode | target | concurrency | p50 ms | p99 ms | requests/s | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in summarize_variants(measured):
        lines.append(
            f"| `{row['mode']}` | {TARGETS[row['target']]} | {row['concurrency']} "
            f"| {cell(row['p50_ms'], '.1f')} | {cell(row['p99_ms'], '.0f')} "
            f"| {cell(row['throughput_rps'], ',.0f')} | {row['errors']} |"
        )
    lines += ["", *interpret_variants(summarize_variants(measured))]
    modes = [mode for mode in measured["modes"] if mode in measured["probes"]]
    probes = [measured["probes"][mode] for mode in modes]
    lines += ["", "What each mode switched, read inside the turnwise replica:", ""]
    lines += ["| constant | " + " | ".join(f"`{mode}`" for mode in modes) + " |"]
    lines += ["|---|" + "---:|" * len(modes)]
    for name in SERVE_MODE_CONSTANTS:
        lines.append(
            f"| `{name}` | " + " | ".join(str(p["constants"][name]) for p in probes) + " |"
        )
    loop = " | ".join(f"`{p['event_loop_policy']}`" for p in probes)
    lines += [f"| event loop policy | {loop} |", "<!-- serve_latency_variants:end -->"]
    return "\n".join(lines)


def interpret_variants(rows: list[dict[str, Any]]) -> list[str]:
    """What the table says at concurrency 1 (p50) and at the highest (throughput)."""
    at = {(r["mode"], r["target"], r["concurrency"]): r for r in rows}
    top = max(r["concurrency"] for r in rows)

    def p50(mode: str, target: str, c: int = 1) -> str:
        row = at.get((mode, target, c))
        return f"{row['p50_ms']['median']:.1f} ms" if row else "—"

    def rps(mode: str, target: str) -> str:
        row = at.get((mode, target, top))
        return f"{row['throughput_rps']['median']:,.0f}/s" if row else "—"

    return [
        "At concurrency 1 (median p50), turnwise through Serve's HTTP proxy takes "
        f"{p50('default', 'turnwise_http')} with Serve's defaults, "
        f"{p50('optimized', 'turnwise_http')} throughput-optimized and "
        f"{p50('optimized_proxy', 'turnwise_http')} throughput-optimized without direct "
        f"ingress; at concurrency {top} it serves {rps('default', 'turnwise_http')}, "
        f"{rps('optimized', 'turnwise_http')} and {rps('optimized_proxy', 'turnwise_http')}. "
        "Straight to the replica's direct-ingress port (no proxy) it takes "
        f"{p50('optimized', 'turnwise_direct')} and serves "
        f"{rps('optimized', 'turnwise_direct')}. The no-op deployment takes "
        f"{p50('default', 'noop_http')} over HTTP and {p50('default', 'noop_grpc')} over "
        "gRPC (Serve's defaults), "
        f"{p50('optimized_proxy', 'noop_http')} and {p50('optimized_proxy', 'noop_grpc')} "
        "without direct ingress: the gap is what a gRPC ingress could save turnwise at "
        "most, since turnwise's own work is the same over either.",
    ]
