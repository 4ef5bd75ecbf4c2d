"""SageMaker training container: ``python -m learner.sagemaker_entry`` on every instance.

SageMaker starts the same container on each host and describes the cluster in
``/opt/ml/input/config/resourceconfig.json``. The first host (sorted) is the Ray head,
the others join it:

- head: ``ray start --head --port 6379``, wait until every host's Ray node is alive, run
  ``python -m learner`` with the job's Hydra overrides plus ``ray.address=auto``,
  checkpoints in ``/opt/ml/checkpoints`` and ``resume=true`` when a checkpoint is already
  there (SageMaker restores that directory from S3 after a spot interruption), copy the
  latest checkpoint to ``/opt/ml/model``, stop its Ray node. With ``TURNWISE_STORE_URI``
  (the launcher's ``--run-s3``) the run's records (every host's transitions, metrics,
  evaluations, alerts) go to that run store on S3 (``store.uri``); the evaluator is placed
  on the head (resource ``turnwise_head``), where the checkpoints are.
- worker: ``ray start --address HEAD:6379``, wait until the head goes away, stop its Ray
  node, exit 0.

Each role runs ``ray start --block`` as its child and stops exactly that node (never a
machine-wide ``ray stop``).

The overrides are the job's hyperparameters, one per key (:func:`encode_overrides`).
``--ml-root`` (or ``TURNWISE_ML_ROOT``) stands in for ``/opt/ml`` in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from turnwise.checkpoint_store import LocalCheckpointStore

log = logging.getLogger("learner.sagemaker_entry")

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
RAY_PORT = 6379
HEAD_RESOURCE = "turnwise_head"  # the head host's custom Ray resource
STORE_URI_ENV = "TURNWISE_STORE_URI"  # the run store, set by the launcher (--run-s3)
# Set by this entrypoint for every run; a hyperparameter may not set them.
OWNED_KEYS = ("ray.address", "checkpoint.uri", "resume", "hydra.run.dir")
# Hyperparameters SageMaker itself may add (tuning jobs, the SageMaker Python SDK).
RESERVED_PREFIXES = ("_", "sagemaker_")
MAX_HYPERPARAMETERS, MAX_KEY, MAX_VALUE = 100, 256, 2500  # CreateTrainingJob's limits


# -- the job's description ------------------------------------------------------------
@dataclass(frozen=True)
class Paths:
    """SageMaker's directories under one root (``/opt/ml`` in a training job)."""

    root: Path

    @property
    def resource_config(self) -> Path:
        return self.root / "input" / "config" / "resourceconfig.json"

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def run_dir(self) -> Path:
        return self.root / "output" / "data" / "run"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


@dataclass(frozen=True)
class Cluster:
    current_host: str
    hosts: tuple[str, ...]

    @property
    def head(self) -> str:
        return sorted(self.hosts)[0]

    @property
    def is_head(self) -> bool:
        return self.current_host == self.head


def read_cluster(path: Path) -> Cluster:
    """``resourceconfig.json``: ``current_host`` and ``hosts``."""
    data = json.loads(path.read_text())
    cluster = Cluster(data["current_host"], tuple(data["hosts"]))
    if cluster.current_host not in cluster.hosts:
        raise ValueError(f"current_host {cluster.current_host!r} is not in hosts {cluster.hosts}")
    return cluster


def _override_key(override_key: str) -> str:
    return override_key.lstrip("+~")


def encode_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """Hydra overrides as SageMaker hyperparameters: ``KEY=VALUE`` becomes ``{KEY: VALUE}``
    (``+exp=warehouse`` gives ``{"+exp": "warehouse"}``; ``~key`` gives ``{"~key": ""}``).

    >>> encode_overrides(["+exp=warehouse", "train.env_steps=20000"])
    {'+exp': 'warehouse', 'train.env_steps': '20000'}
    """
    encoded: dict[str, str] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not key or (not sep and not key.startswith("~")):
            raise ValueError(f"override {override!r} is not KEY=VALUE")
        if key in encoded:
            raise ValueError(f"override key {key!r} given twice")
        if len(key) > MAX_KEY or len(value) > MAX_VALUE:
            raise ValueError(f"override {key!r} is longer than SageMaker allows")
        encoded[key] = value
    if len(encoded) > MAX_HYPERPARAMETERS:
        raise ValueError(f"{len(encoded)} overrides; SageMaker takes {MAX_HYPERPARAMETERS}")
    check_owned(list(encoded))
    return encoded


def decode_overrides(hyperparameters: Mapping[str, str]) -> list[str]:
    """The inverse of :func:`encode_overrides`; SageMaker's own keys are left out."""
    overrides = [
        key if key.startswith("~") and value == "" else f"{key}={value}"
        for key, value in hyperparameters.items()
        if not key.startswith(RESERVED_PREFIXES)
    ]
    check_owned([o.partition("=")[0] for o in overrides])
    return overrides


def check_owned(keys: Sequence[str]) -> None:
    owned = sorted({_override_key(k) for k in keys} & set(OWNED_KEYS))
    if owned:
        raise ValueError(f"{owned} are set by learner.sagemaker_entry; leave them out")


def read_overrides(path: Path) -> list[str]:
    return decode_overrides(json.loads(path.read_text())) if path.exists() else []


@dataclass(frozen=True)
class Options:
    port: int = RAY_PORT
    ray_args: tuple[str, ...] = ()
    join_timeout_s: float = 600.0


# -- Ray ------------------------------------------------------------------------------
class RayNode:
    """This host's Ray node: a ``ray start --block`` process, stopped by SIGTERM (which
    stops the node's processes too; no machine-wide ``ray stop``)."""

    def __init__(self, gcs_port: int, *args: str) -> None:
        command = [*RAY_CLI, "start", "--block", "--disable-usage-stats", *args]
        log.info("starting %s", shlex.join(command[2:]))
        self.gcs_port = gcs_port
        self.process = subprocess.Popen(command)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        forget_cluster(self.gcs_port)
        log.info("Ray node stopped")


def forget_cluster(gcs_port: int) -> None:
    """Drop Ray's note of the cluster on this machine. ``ray start`` writes it for later
    ``ray.init()`` calls to join; ``ray stop`` removes it, a stopped ``--block`` does not,
    and a stale one makes every later ``ray.init()`` here try to join a dead cluster."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    with contextlib.suppress(OSError):
        if path.read_text().strip().rpartition(":")[2] == str(gcs_port):
            path.unlink()


def port_open(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float, interval: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        time.sleep(interval)


def start_head(address: str, options: Options) -> RayNode:
    """``ray start --head``; returns once its GCS answers at ``address``."""
    own = (
        ()
        if any(a.startswith("--resources") for a in options.ray_args)
        else (f"--resources={json.dumps({HEAD_RESOURCE: 1})}",)
    )
    node = RayNode(
        options.port, "--head", f"--port={options.port}", "--include-dashboard=false",
        *own, *options.ray_args,
    )  # fmt: skip
    wait_for(lambda: port_open(address) or not node.alive(), 120.0, 0.5, "no Ray head")
    if not node.alive():
        raise RuntimeError("ray start --head failed")
    return node


def join_head(address: str, options: Options) -> RayNode:
    """``ray start --address`` once the head's GCS answers (workers may boot first)."""
    wait_for(lambda: port_open(address), options.join_timeout_s, 1.0, f"no Ray head at {address}")
    return RayNode(options.port, f"--address={address}", *options.ray_args)


def alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"])


def connect(address: str, timeout: float) -> None:
    """``ray.init(address)``, retried: the GCS answers before the head's raylet is up."""
    import ray

    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            return
        except Exception as error:  # ConnectionError, or Ray's "timed out during startup"
            ray.shutdown()
            if time.monotonic() > deadline:
                raise
            log.info("Ray at %s not ready (%s); retrying", address, error)
            time.sleep(5.0)


def wait_for_nodes(address: str, expected: int, timeout: float) -> int:
    """Block until ``expected`` Ray nodes are alive; the number seen."""
    import ray

    connect(address, timeout)
    try:
        wait_for(lambda: alive_nodes() >= expected, timeout, 2.0, f"fewer than {expected} nodes")
        return alive_nodes()
    finally:
        ray.shutdown()


def wait_for_head_to_leave(
    address: str, node: RayNode, stop: threading.Event, misses: int = 3
) -> None:
    """Return once the head's port was closed ``misses`` polls in a row, this node died,
    or ``stop`` is set (SIGTERM)."""
    missed = 0
    while missed < misses and node.alive() and not stop.wait(2.0):
        missed = 0 if port_open(address) else missed + 1


# -- checkpoints and the learner -------------------------------------------------------
def latest_checkpoint(directory: Path) -> str | None:
    """The newest complete checkpoint; ``latest`` is repointed to it if it names an
    incomplete one (a partial restore from S3)."""
    store = LocalCheckpointStore(directory)
    names = store.list()
    if not names:
        return None
    latest = store.pointer("latest")
    if latest not in names:
        log.warning(
            "pointer latest -> %s is not a complete checkpoint; using %s", latest, names[-1]
        )
        store.set_pointer("latest", names[-1])
        latest = names[-1]
    return latest


def placement_overrides(overrides: Sequence[str]) -> list[str]:
    """The run store from the launcher, and the evaluator on the head host (it reads the
    head's local checkpoints); a hyperparameter that sets either key wins."""
    given = {o.lstrip("+~").partition("=")[0] for o in overrides}
    extra = []
    if os.environ.get(STORE_URI_ENV) and "store.uri" not in given:
        extra.append(f"store.uri={os.environ[STORE_URI_ENV]}")
    if "evaluator.resources" not in given:
        extra.append(f"evaluator.resources={{{HEAD_RESOURCE}:1}}")
    return extra


def learner_command(overrides: Sequence[str], paths: Paths, resume: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "learner",
        *overrides,
        *placement_overrides(overrides),
        "ray.address=auto",
        f"checkpoint.uri={paths.checkpoints.resolve().as_uri()}",
        f"resume={str(resume).lower()}",
        f"hydra.run.dir={paths.run_dir.resolve()}",
    ]


def run_learner(command: Sequence[str]) -> int:
    """Run the learner; SIGTERM (a spot interruption, a stopped job) is passed on to it, so
    it ends gracefully with a final checkpoint."""
    log.info("running %s", shlex.join(command))
    process = subprocess.Popen(command)
    if threading.current_thread() is not threading.main_thread():
        return process.wait()
    previous = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def export_model(checkpoints: Path, model: Path) -> list[str]:
    """Copy the latest (and the best) checkpoint to ``model`` as a checkpoint store of its
    own, pointers included, so ``model`` loads like any other store (serving, evaluator)."""
    source = LocalCheckpointStore(checkpoints)
    target = LocalCheckpointStore(model)
    names = {"latest": latest_checkpoint(checkpoints), "best": source.pointer("best")}
    copied: list[str] = []
    for pointer, name in names.items():
        if name is None or name not in source.list():
            continue
        if name not in copied:
            shutil.copytree(checkpoints / name, model / name, dirs_exist_ok=True)
            copied.append(name)
        target.set_pointer(pointer, name)
    log.info("model: %s in %s", copied, model)
    return copied


# -- the two roles ---------------------------------------------------------------------
def head_address(cluster: Cluster, options: Options) -> str:
    return f"{socket.gethostbyname(cluster.head)}:{options.port}"


def run_head(cluster: Cluster, paths: Paths, options: Options) -> int:
    overrides = read_overrides(paths.hyperparameters)
    address = head_address(cluster, options)
    node = start_head(address, options)
    try:
        alive = wait_for_nodes(address, len(cluster.hosts), options.join_timeout_s)
        log.info("%d of %d Ray nodes alive", alive, len(cluster.hosts))
        os.environ["RAY_ADDRESS"] = address  # what the learner's ray.address=auto joins
        resume = latest_checkpoint(paths.checkpoints) is not None
        code = run_learner(learner_command(overrides, paths, resume))
        if code != 0:
            raise RuntimeError(f"the learner exited with {code}")
        export_model(paths.checkpoints, paths.model)
        return 0
    finally:
        node.stop()


def run_worker(cluster: Cluster, options: Options) -> int:
    address = head_address(cluster, options)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = join_head(address, options)
    try:
        log.info("Ray node joining %s; waiting for the head to finish", address)
        wait_for_head_to_leave(address, node, stop)
        return 0
    finally:
        node.stop(timeout=15.0)  # the head is gone: nothing to drain towards


def run(paths: Paths, options: Options) -> int:
    """This host's role; a failure is written to ``output/failure`` for SageMaker."""
    # No token auth inside a job: its hosts share a private network, and there is no
    # channel to hand a token to the workers. Set RAY_AUTH_MODE yourself to change it.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        cluster = read_cluster(paths.resource_config)
        log.info("host %s of %s; Ray head %s", cluster.current_host, cluster.hosts, cluster.head)
        if cluster.is_head:
            return run_head(cluster, paths, options)
        return run_worker(cluster, options)
    except Exception as error:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(f"{type(error).__name__}: {error}")
        log.exception("training failed")
        return 1


def parse_args(argv: Sequence[str] | None) -> tuple[Paths, Options]:
    parser = argparse.ArgumentParser(
        prog="python -m learner.sagemaker_entry", description=__doc__.splitlines()[0]
    )
    parser.add_argument("mode", nargs="?", choices=["train"], help="SageMaker's argument")
    parser.add_argument("--ml-root", type=Path,
                        default=Path(os.environ.get("TURNWISE_ML_ROOT", "/opt/ml")))  # fmt: skip
    parser.add_argument("--ray-port", type=int, default=RAY_PORT)
    parser.add_argument("--ray-start-args", default="", help="more `ray start` arguments")
    parser.add_argument("--join-timeout", type=float, default=600.0, help="seconds")
    args = parser.parse_args(argv)
    options = Options(args.ray_port, tuple(shlex.split(args.ray_start_args)), args.join_timeout)
    return Paths(args.ml_root), options


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(*parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
