"""Serving latency: turnwise's endpoint beside a minimal server and the bare forward.

``python -m benchmarks.serve_latency [--quick] [--checkpoint PATH]`` measures, one after
another in one run, at concurrency 1, 8 and 32, the same policy (Warehouse-v0, a fresh
checkpoint unless ``--checkpoint`` names one) answering one observation per request:

- ``forward``: the bare model forward in this process, from N threads (the floor);
- ``fastapi``: a minimal FastAPI app under uvicorn (one process, no validation beyond
  ``list[float]``, no batching) in a subprocess;
- ``serve_noop``: a Ray Serve ingress deployment that reads the body and returns a
  constant: Serve's own cost on this machine;
- ``turnwise``: ``serving.app`` on a local Ray Serve (one replica, its defaults: dynamic
  batching, full validation, metrics).

Then an overload section (``overload``, ``--only overload`` for it alone): turnwise
with its defaults under ``--overload-concurrency`` (256) closed-loop clients for
``--overload-seconds`` (20; 8 with ``--quick``), twice: clients that wait as long as
``Retry-After`` says after a 503, then clients that retry at once. It reports the 503s
(by the replica's admission control or by Serve's proxy, and how many carried
``Retry-After``), p50/p99 of the accepted requests, and the drain time: from the end of
the phase until the last request in flight is answered.

Then the variants section (``variants``, ``--only variants`` for it alone; the modes with
``--variants MODE ...``): Ray Serve's throughput-optimized mode and its gRPC ingress
beside today's HTTP path, alternated in ``--rounds`` rounds (benchmarks/serve_variants.py).

HTTP clients are aiohttp tasks in this process, on the same machine. Latency is per
request, client side; throughput is requests over the wall time of the timed phase.
Writes ``benchmarks/results/serve_latency.json`` and the ``serve_latency`` section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import logging
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from fastapi import Request
from pydantic import BaseModel

from benchmarks.alternating import positive_int
from benchmarks.report import (
    BENCHMARKS_MD,
    RESULTS_DIR,
    load_average,
    machine_info,
    update_section,
    write_json,
)
from benchmarks.serve_variants import MODES, measure_variants, render_variants, run_server
from serving.settings import SERVE_ENV
from serving.testing import random_walk_observations

log = logging.getLogger("benchmarks.serve_latency")

CONCURRENCY = (1, 8, 32)
REQUESTS = {"full": 2_000, "quick": 200}  # timed requests per cell
WARMUP = 50
OVERLOAD_CONCURRENCY, OVERLOAD_SECONDS = 256, {"full": 20.0, "quick": 8.0}
LABELS = {
    "forward": "bare forward, in-process",
    "fastapi": "minimal FastAPI + uvicorn",
    "serve_noop": "Ray Serve, no-op deployment",
    "turnwise": "turnwise (Ray Serve)",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summarize(latencies: list[float], wall: float, errors: int) -> dict[str, Any]:
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
        "throughput_rps": len(latencies) / wall,
    }


# -- the floor: the bare forward from threads -------------------------------------------
def forward_cell(model, obs: np.ndarray, concurrency: int, n: int) -> dict[str, Any]:
    def run(count: int) -> tuple[list[float], float]:
        counter, latencies = itertools.count(), []

        def worker() -> None:
            while (i := next(counter)) < count:
                x = torch.from_numpy(obs[i % len(obs)][None])
                start = time.perf_counter()
                with torch.inference_mode():
                    int(model(x)[0].argmax(-1))
                latencies.append(time.perf_counter() - start)

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return latencies, time.perf_counter() - start

    run(WARMUP)
    latencies, wall = run(n)
    return summarize(latencies, wall, 0)


# -- HTTP load from aiohttp tasks ---------------------------------------------------------
async def _http_run(
    url: str, bodies: list[bytes], concurrency: int, n: int, seconds: float = float("inf")
):
    """Closed-loop clients until ``n`` requests, or ``seconds``, have passed."""
    import aiohttp

    counter, latencies, errors = itertools.count(), [], 0
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal errors
            while (i := next(counter)) < n and time.perf_counter() < stop_at:
                start = time.perf_counter()
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start, errors


def http_cell(url: str, bodies: list[bytes], concurrency: int, n: int) -> dict[str, Any]:
    asyncio.run(_http_run(url, bodies, concurrency, WARMUP))
    return summarize(*asyncio.run(_http_run(url, bodies, concurrency, n)))


def wait_ready(url: str, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout:.0f} s")
        time.sleep(0.2)


# -- the minimal FastAPI server (run in a subprocess) -------------------------------------
class BaselineBody(BaseModel):
    observation: list[float]


def baseline_app(checkpoint: str):
    """The same model behind FastAPI with nothing else: no batching, limits or metrics."""
    from fastapi import FastAPI

    from serving.source import load_policy, parse_source

    torch.set_num_threads(1)
    source = parse_source(checkpoint)
    model = load_policy(source, source.current_name()).model
    app = FastAPI()

    @app.post("/act")
    async def act(body: BaselineBody) -> dict[str, int]:
        with torch.inference_mode():
            logits, _ = model(torch.tensor([body.observation]))
        return {"action": int(logits.argmax(-1))}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_baseline(port: int, checkpoint: str) -> None:
    import uvicorn

    app = baseline_app(checkpoint)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the three implementations -------------------------------------------------------------
def measure_forward(checkpoint: str, obs, bodies, n: int) -> list[dict[str, Any]]:
    from serving.source import load_policy, parse_source

    torch.set_num_threads(1)
    source = parse_source(checkpoint)
    model = load_policy(source, source.current_name()).model
    return [dict(concurrency=c, **forward_cell(model, obs, c, n)) for c in CONCURRENCY]


def measure_fastapi(checkpoint: str, obs, bodies, n: int) -> list[dict[str, Any]]:
    port = _free_port()
    command = [sys.executable, "-m", "benchmarks.serve_latency", "--baseline-server"]
    command += ["--port", str(port), "--checkpoint", checkpoint]
    server = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/act"
        return [dict(concurrency=c, **http_cell(url, bodies, c, n)) for c in CONCURRENCY]
    finally:
        server.terminate()
        server.wait(timeout=30)


def noop_serve_app():
    """Ray Serve's own floor: an ingress deployment that reads the body, returns a constant."""
    from fastapi import FastAPI
    from ray import serve

    app = FastAPI()

    @app.post("/v1/act")
    async def act(request: Request) -> dict[str, int]:  # plain functions: see serving/app.py
        await request.body()
        return {"action": 0}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return serve.deployment(serve.ingress(app)(), name="Noop", max_ongoing_requests=128).bind()


def _on_serve(make_app: Callable[[], Any], measure: Callable[[str], Any]) -> Any:
    """``measure(url of /v1/act)`` against ``make_app()`` on a fresh local Ray Serve, in
    Serve's mode as ``python -m serving`` runs it (``serving.settings.SERVE_ENV``)."""
    import ray
    from ray import serve

    from serving.testing import start_local_ray

    port = _free_port()
    start_local_ray()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(make_app(), name="bench", route_prefix="/")
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        return measure(f"http://127.0.0.1:{port}/v1/act")
    finally:
        serve.shutdown()
        ray.shutdown()


def _cells(bodies, n: int) -> Callable[[str], list[dict[str, Any]]]:
    return lambda url: [dict(concurrency=c, **http_cell(url, bodies, c, n)) for c in CONCURRENCY]


def measure_serve_noop(checkpoint: str, obs, bodies, n: int) -> list[dict[str, Any]]:
    return _on_serve(noop_serve_app, _cells(bodies, n))


def measure_turnwise(checkpoint: str, obs, bodies, n: int) -> list[dict[str, Any]]:
    from serving.app import build_app

    return _on_serve(lambda: build_app({"checkpoint": checkpoint}), _cells(bodies, n))


MEASURES: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "forward": measure_forward,
    "fastapi": measure_fastapi,
    "serve_noop": measure_serve_noop,
    "turnwise": measure_turnwise,
}
SECTIONS = [*MEASURES, "overload", "variants"]


# -- overload: many more clients than the replica can serve ------------------------------
class Reply(NamedTuple):
    status: int
    seconds: float  # client side
    retry_after: str | None  # the header, if any
    error: str | None  # the JSON error code of a 503, if it has one


async def overload_run(
    url: str, bodies: list[bytes], concurrency: int, seconds: float, honour_retry_after: bool
) -> tuple[list[Reply], float]:
    """Closed-loop clients for ``seconds``: every reply, and the drain time (end of the
    phase to the last answer). Clients that honour ``Retry-After`` wait that long after
    a 503 before their next request; the others send it at once."""
    import aiohttp

    replies: list[Reply] = []
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(k: int) -> None:
            while (start := time.perf_counter()) < stop_at:
                async with session.post(url, data=bodies[k % len(bodies)], headers=headers) as r:
                    body = await r.read()
                retry_after = r.headers.get("Retry-After")
                error = _error_code(body) if r.status == 503 else None
                replies.append(Reply(r.status, time.perf_counter() - start, retry_after, error))
                if honour_retry_after and r.status == 503 and retry_after:
                    await asyncio.sleep(min(float(retry_after), stop_at - time.perf_counter()))
                k += concurrency

        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        return replies, time.perf_counter() - stop_at


def _error_code(body: bytes) -> str | None:
    try:
        return json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None  # Serve's own 503 (max_queued_requests) is plain text


def summarize_overload(replies: list[Reply], drain_s: float, seconds: float) -> dict[str, Any]:
    accepted = [r.seconds for r in replies if r.status == 200]
    shed = [r for r in replies if r.status == 503]
    ms = np.asarray(accepted or [float("nan")]) * 1000
    return {
        "requests": len(replies),
        "accepted": len(accepted),
        "shed_503": len(shed),
        "shed_by_replica": sum(r.error == "overloaded" for r in shed),  # the rest: Serve's proxy
        "shed_with_retry_after": sum(r.retry_after is not None for r in shed),
        "other_errors": len(replies) - len(accepted) - len(shed),
        "accepted_p50_ms": float(np.percentile(ms, 50)),
        "accepted_p99_ms": float(np.percentile(ms, 99)),
        "accepted_max_ms": float(ms.max()),
        "accepted_rps": len(accepted) / seconds,
        "drain_s": drain_s,
    }


def measure_overload(checkpoint: str, bodies, concurrency: int, seconds: float) -> list[dict]:
    """turnwise with its defaults under ``concurrency`` closed-loop clients, first clients
    that honour ``Retry-After``, then clients that retry at once."""
    from serving.app import build_app

    def measure(url: str) -> list[dict[str, Any]]:
        asyncio.run(_http_run(url, bodies, 8, WARMUP))
        rows = []
        for honour in (True, False):
            run = overload_run(url, bodies, concurrency, seconds, honour)
            replies, drain_s = asyncio.run(run)
            summary = summarize_overload(replies, drain_s, seconds)
            rows.append({"honour_retry_after": honour, **summary})
            time.sleep(2.0)  # let the replica's estimate settle between the phases
        return rows

    rows = _on_serve(lambda: build_app({"checkpoint": checkpoint}), measure)
    return [{"concurrency": concurrency, "seconds": seconds, **row} for row in rows]


# -- report ---------------------------------------------------------------------------------
def render(report: dict[str, Any]) -> str:
    m, ckpt = report["machine"], report["checkpoint"]
    lines = [
        "<!-- serve_latency:begin -->",
        "## Serving latency: one observation per request",
        "",
        "The same Warehouse-v0 policy, deterministic action, one request at a time per "
        "client; client-side latency, throughput over the timed phase "
        f"({report['requests_per_cell']:,} requests per cell after {WARMUP} warm-up). "
        "Clients (threads for the bare forward, aiohttp tasks for HTTP) share the "
        "machine with the server. Produced by:",
        "",
        f"```\n{report['command']}\n```",
        "",
        f"- Machine: {m['cpu_model']}, {m['cpu_count']} logical CPUs, no GPU; "
        f"torch {m['torch']}, Ray {m['ray']}, FastAPI {m['fastapi']}, uvicorn {m['uvicorn']}",
        f"- Load average (1 min) before and after the run: {report['load_before']} / "
        f"{(m.get('load_average') or ['?'])[0]}; other work on the machine skews the figures",
        f"- Checkpoint: {ckpt['description']} (policy version {ckpt['policy_version']})",
        f"- Ray Serve's mode (its rows, the overload): {report.get('serve_env') or 'defaults'}",
        f"- Date: {report['date']} ({report['mode']} mode)",
    ]
    if report["results"]:
        lines += [
            "",
            "| implementation | concurrency | p50 ms | p99 ms | requests/s | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for row in report["results"]:
        lines.append(
            f"| {LABELS[row['implementation']]} | {row['concurrency']} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['throughput_rps']:,.0f} | {row['errors']} |"
        )
    if report["results"]:
        lines += ["", interpretation(report)]
    lines += [*render_overload(report.get("overload")), "<!-- serve_latency:end -->"]
    return "\n".join(lines)


def render_overload(rows: list[dict[str, Any]] | None) -> list[str]:
    if not rows:
        return []
    from serving.settings import ServeArgs

    first, max_wait = rows[0], ServeArgs.model_fields["max_queue_wait_s"].default
    lines = [
        "",
        f"### Overload: {first['concurrency']} closed-loop clients for {first['seconds']:g} s",
        "",
        f"turnwise with its defaults (`max_queue_wait_s` {max_wait:g} s). Each client sends "
        "its next request as soon as the last is answered; after a 503, clients that honour "
        "`Retry-After` wait that long first, the others retry at once. Latency is client "
        "side; drain is the time from the end of the phase to the last answer.",
        "",
        "| clients | requests | accepted | 503 | of which by the replica "
        "| 503 with Retry-After | other errors "
        "| accepted p50 ms | accepted p99 ms | accepted max ms | accepted/s | drain s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        clients = "honour Retry-After" if row["honour_retry_after"] else "retry at once"
        lines.append(
            f"| {clients} | {row['requests']:,} | {row['accepted']:,} | {row['shed_503']:,} "
            f"| {row['shed_by_replica']:,} | {row['shed_with_retry_after']:,} "
            f"| {row['other_errors']} "
            f"| {row['accepted_p50_ms']:.0f} | {row['accepted_p99_ms']:.0f} "
            f"| {row['accepted_max_ms']:.0f} | {row['accepted_rps']:,.0f} "
            f"| {row['drain_s']:.2f} |"
        )
    return lines


def interpretation(report: dict[str, Any]) -> str:
    """Two sentences read off the figures: where the time goes at 1, throughput at 32."""
    rows = {(r["implementation"], r["concurrency"]): r for r in report["results"]}
    one = {impl: rows.get((impl, 1)) for impl in LABELS}
    top = {impl: rows.get((impl, max(CONCURRENCY))) for impl in LABELS}
    if not all(one.values()) or not all(top.values()):
        return "Not every implementation was measured, so there is nothing to compare."
    f, m, s, t = (one[k]["p50_ms"] for k in ("forward", "fastapi", "serve_noop", "turnwise"))
    if t > s > m:
        own = (
            f"Serve's own path (HTTP proxy, call to the replica, body fetched back from the "
            f"proxy) is {(s - m) / (t - m):.0%} of turnwise's extra time over the minimal "
            f"server, and turnwise's validation, batching and metrics add {t - s:.2f} ms"
        )
    else:  # the two were measured one after the other on a shared machine
        own = (
            "turnwise is within the noise of the no-op deployment, so nearly all of its "
            "extra time over the minimal server is Serve's own path (HTTP proxy, call to "
            "the replica, body fetched back from the proxy)"
        )
    return (
        f"At concurrency 1 (p50) the forward takes {f:.2f} ms, the minimal server {m:.2f} ms, "
        f"a no-op Serve deployment {s:.2f} ms and turnwise {t:.2f} ms: {own}. "
        f"At concurrency {max(CONCURRENCY)} "
        f"turnwise serves {top['turnwise']['throughput_rps']:,.0f} requests/s against "
        f"{top['serve_noop']['throughput_rps']:,.0f} for the no-op Serve deployment and "
        f"{top['fastapi']['throughput_rps']:,.0f} for the minimal server."
    )


def checkpoint_for(args: argparse.Namespace, root: Path) -> tuple[str, dict[str, Any]]:
    from serving.source import parse_source

    if args.checkpoint:
        source = parse_source(args.checkpoint)
        name = source.current_name()
        description = f"`{name}` of {args.checkpoint}"
        checkpoint = args.checkpoint
    else:
        from serving.testing import make_checkpoint

        built = make_checkpoint(str(root / "checkpoints"))
        checkpoint, name = built.uri, built.name
        description = "an untrained policy (`serving.testing.make_checkpoint`)"
    manifest = json.loads(parse_source(checkpoint).store.read(name, "manifest.json"))
    return checkpoint, {
        "description": description,
        "name": name,
        "policy_version": manifest["policy_version"],
        "env_version": manifest["env_version"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_latency")
    parser.add_argument("--quick", action="store_true", help=f"{REQUESTS['quick']} per cell")
    parser.add_argument("--checkpoint", help="checkpoint, run dir or store (default: fresh)")
    parser.add_argument("--only", nargs="*", choices=[*SECTIONS], help="a subset of the sections")
    parser.add_argument("--variants", nargs="+", choices=[*MODES], default=[*MODES])
    parser.add_argument("--rounds", type=positive_int, default=3, help="of the variants")
    parser.add_argument("--cell-seconds", type=float, help="per variant cell (5; 2 --quick)")
    parser.add_argument("--overload-concurrency", type=int, default=OVERLOAD_CONCURRENCY)
    parser.add_argument("--overload-seconds", type=float, help="default: 20 (8 with --quick)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serve_latency.json")
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-server", choices=[*MODES], help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        serve_baseline(args.port, args.checkpoint)
        return {}
    if args.serve_server:
        run_server(args.serve_server, args.checkpoint, args.port, args.grpc_port, args.ready_file)
        return {}
    load_before = (load_average() or [None])[0]
    n = REQUESTS["quick" if args.quick else "full"]
    obs = random_walk_observations()
    bodies = [json.dumps({"observation": row.tolist()}).encode() for row in obs]
    results, overload, variants, sections = [], None, None, args.only or [*SECTIONS]
    with tempfile.TemporaryDirectory(prefix="turnwise-serve-latency-") as root:
        checkpoint, described = checkpoint_for(args, Path(root))
        for impl in (name for name in sections if name in MEASURES):
            log.info("measuring %s", LABELS[impl])
            for row in MEASURES[impl](checkpoint, obs, bodies, n):
                log.info("  %s", {k: round(v, 2) for k, v in row.items()})
                results.append({"implementation": impl, "label": LABELS[impl], **row})
        if "overload" in sections:
            seconds = args.overload_seconds or OVERLOAD_SECONDS["quick" if args.quick else "full"]
            log.info("overload: %d clients for %g s", args.overload_concurrency, seconds)
            overload = measure_overload(checkpoint, bodies, args.overload_concurrency, seconds)
            for row in overload:
                log.info("  %s", {k: round(v, 2) for k, v in row.items()})
        if "variants" in sections:
            seconds = args.cell_seconds or (2.0 if args.quick else 5.0)
            variants = measure_variants(
                checkpoint, obs, bodies, args.variants, args.rounds, seconds
            )
    report = build_report(argv, args.quick, n, described, results)
    report["load_before"], report["overload"] = load_before, overload
    report["serve_env"] = " ".join(f"`{k}={v}`" for k, v in SERVE_ENV.items())
    if variants is not None:  # its own section and file: a run of it alone keeps the rest
        published = {**report, "results": None, "variants": variants}
        write_json(published, args.out.with_name("serve_latency_variants.json"))
        update_section(args.markdown, "serve_latency_variants", render_variants(published))
        print(render_variants(published))
    if set(sections) - {"variants"}:
        write_json(report, args.out)
        update_section(args.markdown, "serve_latency", render(report))
        print(render(report))
    return report


def build_report(argv, quick: bool, n: int, checkpoint: dict, results: list) -> dict[str, Any]:
    import fastapi
    import ray
    import uvicorn

    return {
        "benchmark": "serve_latency",
        "command": shlex.join(["python", "-m", "benchmarks.serve_latency", *argv]),
        "mode": "quick" if quick else "full",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(
            torch=torch.__version__,
            ray=ray.__version__,
            fastapi=fastapi.__version__,
            uvicorn=uvicorn.__version__,
        ),
        "checkpoint": checkpoint,
        "requests_per_cell": n,
        "warmup_per_cell": WARMUP,
        "concurrency": list(CONCURRENCY),
        "results": results,
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
