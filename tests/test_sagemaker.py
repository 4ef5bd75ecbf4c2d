"""SageMaker: the launcher's request against moto's SageMaker over real HTTP, and the
container bootstrap with real Ray processes (a head and a worker on this machine)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from learner import sagemaker
from learner.sagemaker_entry import (
    Paths,
    decode_overrides,
    encode_overrides,
    export_model,
    latest_checkpoint,
    learner_command,
)
from turnwise.checkpoint import load_checkpoint
from turnwise.checkpoint_store import LocalCheckpointStore, open_store
from turnwise.config import compose_config

REPO = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/turnwise-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/turnwise:0.1.0"
OVERRIDES = ["+exp=warehouse", "train.env_steps=20000", "learner.hidden_sizes=[128,128]"]
TINY = [
    "+exp=warehouse",
    "train.env_steps=2000",
    "actors.envs_per_actor=8",
    "actors.fragment_length=16",
    "evaluator.enabled=false",
    "monitoring.metrics_port=-1",
    "train.progress=false",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the launcher --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str) -> Iterator[None]:
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in settings.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        yield


def launch(job_name: str, *flags: str, overrides: list[str] = OVERRIDES) -> int:
    return sagemaker.main(
        [
            "--image", IMAGE, "--role", ROLE,
            "--instance-type", "ml.c5.xlarge", "--instance-count", "2",
            "--checkpoint-s3", f"s3://bucket/turnwise/{job_name}/ckpt",
            "--output-s3", "s3://bucket/turnwise/out",
            "--job-name", job_name, *flags, "--", *overrides,
        ]
    )  # fmt: skip


def test_the_launcher_submits_a_spot_job_with_checkpoints_and_overrides(aws, capsys):
    assert launch("turnwise-spot", "--max-wait", "7200", "--retries", "2") == 0
    arn = capsys.readouterr().out.strip()
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName="turnwise-spot")
    assert job["TrainingJobArn"] == arn
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"] == {
        "S3Uri": "s3://bucket/turnwise/turnwise-spot/ckpt",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert job["HyperParameters"] == {
        "+exp": "warehouse",
        "train.env_steps": "20000",
        "learner.hidden_sizes": "[128,128]",
    }
    assert decode_overrides(job["HyperParameters"]) == OVERRIDES
    assert job["ResourceConfig"] == {
        "InstanceType": "ml.c5.xlarge",
        "InstanceCount": 2,
        "VolumeSizeInGB": 30,
    }
    algorithm = job["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == IMAGE and algorithm["TrainingInputMode"] == "File"
    assert algorithm["ContainerEntrypoint"] == ["python", "-m", "learner.sagemaker_entry"]
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://bucket/turnwise/out"
    # moto keeps no RetryStrategy; the request carries it (checked without AWS):
    spec = sagemaker.parse_args(["--image", IMAGE, "--role", ROLE, "--checkpoint-s3", "s3://b/c",
                                 "--output-s3", "s3://b/o", "--retries", "2"])  # fmt: skip
    assert sagemaker.training_job_request(spec)["RetryStrategy"] == {"MaximumRetryAttempts": 2}


def test_without_spot_there_is_no_wait_time(aws, capsys):
    assert launch("turnwise-on-demand", "--no-spot", "--max-run", "600") == 0
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName="turnwise-on-demand")
    assert job["EnableManagedSpotTraining"] is False
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 600}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+exp=warehouse", "train.env_stepz=1"], "train.env_stepz"),
        (["+exp=warehouse", "train.env_steps=0"], "train.env_steps"),
        (["+exp=warehouse", "checkpoint.uri=s3://b/p"], "checkpoint.uri"),
        (["+exp=warehouse", "env.simulator.mode=connect"], "sidecar"),
    ],
)
def test_a_bad_override_fails_before_anything_is_submitted(aws, capsys, overrides, message):
    assert launch("turnwise-bad", overrides=overrides) == 2
    assert message in capsys.readouterr().err
    jobs = boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert "turnwise-bad" not in {j["TrainingJobName"] for j in jobs}


def test_overrides_round_trip_through_hyperparameters():
    overrides = [*OVERRIDES, "~evaluator.env", "hydra.job.name=a=b"]
    assert encode_overrides(overrides)["~evaluator.env"] == ""
    assert decode_overrides(encode_overrides(overrides)) == overrides
    tuned = {**encode_overrides(OVERRIDES), "_tuning_objective_metric": "x", "sagemaker_job": "y"}
    assert decode_overrides(tuned) == OVERRIDES  # SageMaker's own keys are not overrides
    for bad in (["train.env_steps"], ["a=1", "a=2"], ["resume=true"], ["+hydra.run.dir=/x"]):
        with pytest.raises(ValueError):
            encode_overrides(bad)


# -- the container bootstrap ---------------------------------------------------------------
def write_job(root: Path, host: str, hosts: list[str], overrides: list[str]) -> Paths:
    paths = Paths(root)
    paths.resource_config.parent.mkdir(parents=True)
    config = {"current_host": host, "hosts": hosts, "network_interface_name": "eth0"}
    paths.resource_config.write_text(json.dumps(config))
    paths.hyperparameters.write_text(json.dumps(encode_overrides(overrides)))
    return paths


def entry(paths: Paths, port: int, log: Path, ray_tmp: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "learner.sagemaker_entry", "train",
        "--ml-root", str(paths.root), "--ray-port", str(port),
        "--ray-start-args", "--num-cpus 1", "--join-timeout", "240",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # the defaults,
    env["RAY_TMPDIR"] = str(ray_tmp)  # but sessions apart from any other Ray on this machine
    with open(log, "w") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def ray_processes_of(port: int, ray_tmp: Path) -> list[int]:
    """Ray processes of the test's cluster: their command lines name its GCS port and its
    own temp dir (a port number alone also matches other people's Ray processes)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        ours = str(ray_tmp) in cmdline  # its sessions live in the test's RAY_TMPDIR
        if proc.name.isdigit() and re.search(rf"(:|port=){port}\b", cmdline) and ours:
            pids.append(int(proc.name))
    return [pid for pid in pids if pid != os.getpid()]


def stop_everything(processes: list[subprocess.Popen], port: int, ray_tmp: Path) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    for pid in ray_processes_of(port, ray_tmp):  # what of this cluster outlived its node
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def two_host_job(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """A 2-host job, head 127.0.0.1 and worker localhost, run to the end."""
    tmp = tmp_path_factory.mktemp("sagemaker")
    ray_tmp = Path(tempfile.mkdtemp(prefix="tw-ray-"))  # short: Ray's socket paths live in it
    hosts = ["127.0.0.1", "localhost"]  # sorted: 127.0.0.1 is the head
    port = free_port()
    head = write_job(tmp / "head", "127.0.0.1", hosts, TINY)
    worker = write_job(tmp / "worker", "localhost", hosts, TINY)
    processes = [entry(worker, port, tmp / "worker.log", ray_tmp)]  # a worker may boot first
    processes.append(entry(head, port, tmp / "head.log", ray_tmp))
    try:
        head_code = processes[1].wait(timeout=240)
        worker_code = processes[0].wait(timeout=120)
        logs = {name: (tmp / f"{name}.log").read_text() for name in ("head", "worker")}
        assert head_code == 0, logs["head"][-4000:]
        assert worker_code == 0, logs["worker"][-4000:]
        yield {"head": head.root, "worker": worker.root, "head.log": tmp / "head.log",
               "ray_tmp": ray_tmp}  # fmt: skip
    finally:
        stop_everything(processes, port, ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_head_sees_both_nodes_and_trains(two_host_job):
    log = two_host_job["head.log"].read_text()
    assert "2 of 2 Ray nodes alive" in log
    assert "resume=false" in log  # nothing to resume from in a fresh job
    run_dir = Paths(two_host_job["head"]).run_dir
    assert (run_dir / "metrics.jsonl").exists() and (run_dir / "config.json").exists()
    # the stopped cluster is forgotten: a later ray.init() here starts its own
    assert not (two_host_job["ray_tmp"] / "ray" / "ray_current_cluster").exists()


def test_the_head_writes_the_final_checkpoint_to_the_model_dir(two_host_job):
    paths = Paths(two_host_job["head"])
    model = LocalCheckpointStore(paths.model)
    [name] = model.list()
    assert model.pointer("latest") == name == latest_checkpoint(paths.checkpoints)
    checkpoint = load_checkpoint(open_store(str(paths.model)))
    assert checkpoint.manifest["env_steps"] >= 2000 and checkpoint.weights
    worker_model = Paths(two_host_job["worker"]).model
    assert not worker_model.exists() or not any(worker_model.iterdir())  # workers write none


def test_a_restarted_job_resumes_from_the_restored_checkpoints(two_host_job, tmp_path):
    paths = Paths(two_host_job["head"])
    resume = latest_checkpoint(paths.checkpoints) is not None
    command = learner_command(TINY, paths, resume)
    assert command[:3] == [sys.executable, "-m", "learner"] and "resume=true" in command
    config = compose_config(command[3:])
    assert config.resume and config.ray.address == "auto"
    assert open_store(config.checkpoint.uri).list() == [latest_checkpoint(paths.checkpoints)]


def test_an_incomplete_latest_pointer_falls_back_to_a_complete_checkpoint(tmp_path):
    store = LocalCheckpointStore(tmp_path / "ckpt")
    for name in ("step-000000001000", "step-000000002000"):
        store.save(name, {"weights.pt": b"w", "manifest.json": b"{}"})
    store.set_pointer("best", "step-000000001000")
    store.set_pointer("latest", "step-000000003000")  # its files never arrived
    assert latest_checkpoint(tmp_path / "ckpt") == "step-000000002000"
    assert store.pointer("latest") == "step-000000002000"
    copied = export_model(tmp_path / "ckpt", tmp_path / "model")
    model = LocalCheckpointStore(tmp_path / "model")
    assert copied == ["step-000000002000", "step-000000001000"]
    assert (model.pointer("latest"), model.pointer("best")) == tuple(copied)


def test_a_bad_hyperparameter_fails_the_job_with_a_reason(tmp_path):
    paths = write_job(tmp_path, "algo-1", ["algo-1"], ["+exp=warehouse"])
    paths.hyperparameters.write_text(json.dumps({"resume": "true"}))  # a key it may not set
    run = subprocess.run(
        [sys.executable, "-m", "learner.sagemaker_entry", "--ml-root", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "resume" in paths.failure.read_text()
