"""A real two-node Ray cluster on one machine, with the run store on a moto S3 server.

Two ``ray start --block`` processes (a head advertising ``learner`` and ``evaluator``, a
worker advertising ``rollout``) in this test's own temp dir, with token authentication
on (``RAY_AUTH_MODE=token``, a token of the test's own in ``RAY_AUTH_TOKEN``), each
stopped by its own PID: never ``ray stop``, which would stop every Ray on the machine.

One run of ``python -m learner ray.address=HEAD`` (a module fixture) checks: the rollout actors
land on the worker node and the learner on the head; the worker node's raylet is killed
mid-run and a new worker node joins; the actors are re-created there and the run
finishes; every transition part is in the bucket and readable, and an episode from each
worker node replays exactly; ``evaluator --once``, ``learner.report`` and serving work on
the S3 run URI; and ``ray job submit`` of the documented entrypoint (docs/deployment.md)
trains against the same cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO

from actors.replay import list_episodes
from actors.replay import main as replay_main
from evaluator.__main__ import main as evaluator_main
from learner.report import main as report_main
from turnwise.run_store import RunStore

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RUN_URI = "s3://turnwise/cluster/run"
JOB_URI = "s3://turnwise/cluster/job"
SMALL = [  # 512-row batches, an evaluation and a checkpoint every 8,192 steps
    "+exp=warehouse",
    "actors.envs_per_actor=16",
    "actors.fragment_length=32",
    "checkpoint.every_env_steps=8192",
    "evaluator.every_env_steps=8192",
    "evaluator.episodes=4",
    "train.progress=false",
    "monitoring.metrics_port=0",
    "store.flush_interval_s=2",
]
PLACED = [  # where each part may run: custom resources only the intended node has
    "actors.resources={rollout:1}",
    "learner.resources={learner:1}",
    "evaluator.resources={evaluator:1}",
]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class RayNode:
    """One ``ray start --block`` process; its Ray processes are its children."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        agent, grpc, runtime_env, metrics = free_ports(4)
        command = [
            str(BIN / "ray"),
            "start",
            "--block",
            "--disable-usage-stats",
            "--object-store-memory=100000000",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}",
            *args,
        ]
        self.name, self.log = name, logs / f"{name}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )

    def started(self) -> bool:
        return "Ray runtime started" in self.log.read_text(errors="replace")

    def wait_started(self, timeout: float = 120) -> bool:
        """True once the node is up; False if its ``ray start`` gave up (Ray waits 30 s
        for a raylet to register, which a loaded 2-core machine can exceed)."""
        deadline = time.monotonic() + timeout
        while not self.started():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return False
            time.sleep(0.5)
        return True

    def children(self, name: str) -> list[int]:
        """PIDs of this node's child processes whose executable is ``name``."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rpartition(")")[2].split()[1])
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.process.pid and Path(argv0).name == name:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """SIGTERM to our ``ray start`` (it stops its node's processes), SIGKILL if stuck."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Cluster:
    def __init__(self, env: dict[str, str]) -> None:
        # short: Ray's unix sockets live under it (a socket path has at most 107 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="tw-cluster-"))
        self.env = env
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: list[RayNode] = []

    def start_head(self, resources: dict[str, float], num_cpus: int) -> RayNode:
        env = {  # a dead node is noticed in ~3 s, not ~15 s
            **self.env,
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        args = [
            "--head",
            f"--port={self.gcs_port}",
            f"--ray-client-server-port={self.client_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--temp-dir={self.root}",
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources)}",
        ]
        return self._start("head", args, env)

    def add_worker(self, name: str, resources: dict[str, float], num_cpus: int) -> RayNode:
        args = [
            f"--address={self.address}",
            f"--temp-dir={self.root}",
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources)}",
        ]
        return self._start(name, args, self.env)

    def _start(self, name: str, args: list[str], env: dict[str, str], tries: int = 3) -> RayNode:
        for attempt in range(tries):
            node = RayNode(f"{name}-{attempt}" if attempt else name, args, env, self.root)
            self.nodes.append(node)
            if node.wait_started():
                return node
        pytest.fail(f"node {name} did not start in {tries} tries: {node.log.read_text()[-2000:]}")

    def workers(self) -> list[RayNode]:
        """The worker nodes that are up."""
        up = [n for n in self.nodes if n.process.poll() is None and n.started()]
        return [n for n in up if not n.name.startswith("head")]

    def stop(self) -> None:
        """Stop every node, then remove the temp dir (a failure's message already has
        the node's log tail)."""
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what}: the process ended first (exit {process.returncode})")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def cluster(s3_endpoint: dict[str, str]) -> Iterator[Cluster]:
    env = {
        **os.environ,
        **s3_endpoint,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the nodes' `python`
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(env)
    try:
        cluster.start_head({"learner": 1, "evaluator": 1}, num_cpus=1)
        yield cluster
    finally:
        cluster.stop()


def parts(store: RunStore) -> list[str]:
    return store.files("transitions", "part-*.parquet", recursive=True)


def incarnations(store: RunStore) -> dict[str, dict]:
    names = store.files("transitions", "incarnation-*.json", recursive=True)
    return {name: store.read_json(name) for name in names}


def learner_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "learner", *SMALL, *PLACED, *overrides]


@pytest.fixture(scope="module")
def lost_node_run(cluster: Cluster, tmp_path_factory) -> RunStore:
    """A run whose worker node's raylet is killed mid-run; a new worker node joins."""
    tmp = tmp_path_factory.mktemp("run")
    first = cluster.add_worker("worker-a", {"rollout": 4}, num_cpus=2)
    command = learner_command(
        f"ray.address={cluster.address}",
        f"store.uri={RUN_URI}",
        "train.env_steps=40960",
        f"hydra.run.dir={tmp / 'driver'}",
    )
    log = open(tmp / "learner.log", "wb")  # noqa: SIM115 (closed below)
    run = subprocess.Popen(command, cwd=REPO, env=cluster.env, stdout=log, stderr=log)
    store = RunStore(RUN_URI)
    try:
        # once each actor logged 4 parts (128 steps per env: whole 100-step episodes) on
        # the worker node, its raylet dies
        def logged() -> bool:
            first_lives = [n for n in parts(store) if n.rpartition("/")[2].startswith("part-000-")]
            return all(sum(f"actor-{i:03d}/" in n for n in first_lives) >= 4 for i in (0, 1))

        wait_until(logged, 240, "4 transition parts of each actor", run)
        [raylet] = first.children("raylet")
        os.kill(raylet, signal.SIGKILL)
        first.process.wait(timeout=60)  # `ray start --block` ends with its raylet
        cluster.add_worker("worker-b", {"rollout": 4}, num_cpus=2)
        assert run.wait(timeout=420) == 0, (tmp / "learner.log").read_text()[-4000:]
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
    return store


def test_a_run_on_two_nodes_survives_a_lost_worker_node(lost_node_run: RunStore):
    store = lost_node_run
    placement = store.read_json("placement.json")
    nodes = placement["nodes"]
    head = [n for n, resources in nodes.items() if "learner" in resources]
    worker_a = [n for n, resources in nodes.items() if "rollout" in resources]
    assert len(head) == 1 and len(worker_a) == 1, nodes
    assert placement["learner"]["node_id"] == head[0]  # the learner where its resource is
    assert placement["evaluator"]["node_id"] == head[0]
    lives = incarnations(store)
    for actor in (0, 1):
        first_life = lives[f"transitions/actor-{actor:03d}/incarnation-000.json"]
        assert first_life["node_id"] == worker_a[0]  # rollout actors on the worker node
        later = [v for k, v in lives.items() if k.startswith(f"transitions/actor-{actor:03d}/")]
        assert len(later) >= 2, lives  # re-created after the node was lost ...
        assert later[-1]["node_id"] not in (worker_a[0], head[0])  # ... on the new node
    metrics = [json.loads(line) for line in store.read("metrics.jsonl").splitlines()]
    assert metrics[-1]["env_steps"] >= 40960 and metrics[-1]["actor_failures"] >= 2

    # every part is in the bucket and readable on its own; an episode of each node replays
    names = parts(store)
    rows = sum(pq.read_table(store.path(n), filesystem=store.fs).num_rows for n in names)
    assert rows >= 40960
    complete = [s for s in list_episodes(RUN_URI) if s.terminated or s.truncated]
    for life in ("0", "1"):  # on the first worker node, on the second
        episode = next(s.episode_id for s in complete if s.episode_id.split(".")[1] == life)
        assert replay_main([RUN_URI, "--episode", episode, "--verify"]) == 0


def test_evaluator_report_and_serving_read_the_s3_run(
    cluster: Cluster, lost_node_run: RunStore, tmp_path: Path, capsys
):
    assert evaluator_main([RUN_URI, "--once"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["env_steps"] >= 40960 and row["episodes"] == 4
    assert report_main([RUN_URI, "--out", str(tmp_path / "report")]) == 0
    assert {"report.md", "returns.png", "health.png"} <= {
        p.name for p in (tmp_path / "report").iterdir()
    }
    [port] = free_ports(1)
    serving = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving",
            RUN_URI,
            f"--address={cluster.address}",
            f"--port={port}",
        ],
        cwd=REPO,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def policy() -> dict | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/policy", timeout=5) as r:
                    return json.loads(r.read())
            except OSError:
                return None

        described = wait_until(policy, 240, "the policy server", serving)
        best = lost_node_run.sub("checkpoints").read("best").decode().strip()
        assert described["checkpoint"]["name"] == best
    finally:
        serving.send_signal(signal.SIGTERM)
        try:
            serving.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serving.kill()


def test_ray_job_submit_runs_the_documented_entrypoint(cluster: Cluster):
    # docs/deployment.md, "Submitting a job": the code as the working dir, the nodes'
    # environment (here: the venv on their PATH) for its dependencies
    if not cluster.workers():
        cluster.add_worker("worker-c", {"rollout": 4}, num_cpus=2)
    entrypoint = [
        *("python", "-m", "learner", *SMALL, *PLACED),
        "ray.address=auto",
        f"store.uri={JOB_URI}",
        "train.env_steps=4096",
    ]
    submit = [
        str(BIN / "ray"),
        "job",
        "submit",
        f"--address={cluster.dashboard}",
        "--working-dir=.",
        "--",
        *entrypoint,
    ]
    result = subprocess.run(
        submit, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=420
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "succeeded" in result.stdout.lower()
    store = RunStore(JOB_URI)
    assert store.read("checkpoints/latest")
    assert parts(store) and store.exists("evaluations.jsonl")
