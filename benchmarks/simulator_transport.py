"""Rollout throughput with the simulator in-process vs behind ``sims.server``.

``python -m benchmarks.simulator_transport [--quick]`` times one rollout actor's
``sample()`` (policy inference included, no learning) for the same env count in
one run: Warehouse-v0's batched vector env, a SyncVectorEnv-style loop over
in-process single envs, and the same loop over TCP sessions with a local
``sims.server`` process. Writes benchmarks/results/simulator_transport.json and the
``simulator_transport`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from actors.rollout import RolloutWorker
from benchmarks.report import BENCHMARKS_MD, RESULTS_DIR, machine_info, publish
from turnwise.config import ActorsConfig, EnvConfig, PPOConfig, SimulatorConfig

PATHS = {
    "in-process, batched (WarehouseVectorEnv)": {},
    "in-process, one env object per env": {"vectorization": "sync"},
    "sims.server over TCP (loopback), one session per env": {"simulator": "connect"},
}


def throughput(env: EnvConfig, envs: int, fragment: int, repeats: int) -> float:
    torch.manual_seed(0)
    worker = RolloutWorker(
        0, env, ActorsConfig(envs_per_actor=envs, fragment_length=fragment), PPOConfig(), 0, None
    )
    worker.sample(None)  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        batch = worker.sample(None)
        rates.append(batch.num_rows / (time.perf_counter() - started))
    worker.envs.close()
    return sorted(rates)[len(rates) // 2]


def start_server() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sims.server", "--env", "Warehouse-v0", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return process, process.stdout.readline().strip().removeprefix("listening on ")


def run(envs: int, fragment: int, repeats: int) -> list[dict[str, Any]]:
    server, address = start_server()
    try:
        rows = []
        for name, how in PATHS.items():
            simulator = (
                SimulatorConfig(mode="connect", address=address)
                if how.get("simulator")
                else SimulatorConfig()
            )
            env = EnvConfig(
                kwargs={"size": "small"},
                vectorization=how.get("vectorization", "auto"),
                simulator=simulator,
            )
            rows.append(
                {
                    "path": name,
                    "envs": envs,
                    "env_steps_per_second": throughput(env, envs, fragment, repeats),
                }
            )
        return rows
    finally:
        server.kill()
        server.wait()


def render(report: dict[str, Any]) -> str:
    base = report["rows"][0]["env_steps_per_second"]
    lines = [
        "<!-- simulator_transport:begin -->",
        "## Simulator transport: in-process vs `sims.server`",
        "",
        "One rollout actor's `sample()` (policy inference included, no learning), median of "
        f"{report['repeats']} batches. Produced by:",
        "",
        f"```\n{report['command']}\n```",
        "",
        f"- Machine: {report['machine']['cpu_model']}, {report['machine']['cpu_count']} CPUs; "
        f"date {report['date']}",
        "",
        "| path | envs | env steps/s | vs batched |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['path']} | {r['envs']} | {r['env_steps_per_second']:,.0f} | "
            f"{r['env_steps_per_second'] / base:.2f}x |"
            for r in report["rows"]
        ),
        "",
        "The remote path pays one loopback round trip per env step (request, msgpack, "
        "the server's env step, reply) and the envs are stepped one after another; a "
        "batched step protocol (one message for all of an actor's envs) is the known way "
        "to close the gap.",
        "<!-- simulator_transport:end -->",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simulator_transport")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "simulator_transport.json")
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 5
    with tempfile.TemporaryDirectory():
        rows = run(envs=16, fragment=16 if args.quick else 64, repeats=repeats)
    report = {
        "benchmark": "simulator_transport",
        "command": shlex.join(["python", "-m", "benchmarks.simulator_transport", *argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(torch=torch.__version__),
        "repeats": repeats,
        "rows": rows,
    }
    publish(report, render(report), "simulator_transport", args.out, args.markdown)
    return report


if __name__ == "__main__":
    main()
