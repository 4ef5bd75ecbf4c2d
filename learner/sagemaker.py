"""Submit a training run to SageMaker: ``python -m learner.sagemaker [options] -- OVERRIDES``.

    python -m learner.sagemaker --image $ECR/turnwise:0.1.0 \\
        --role arn:aws:iam::123456789012:role/turnwise-sagemaker \\
        --instance-type ml.c5.xlarge --instance-count 2 \\
        --checkpoint-s3 s3://bucket/turnwise/ckpt/r1 --output-s3 s3://bucket/turnwise/out \\
        -- +exp=warehouse train.env_steps=2000000

One ``create_training_job`` call: the turnwise image with ``python -m learner.sagemaker_entry``
as its entrypoint (a Ray cluster over the instances, then ``python -m learner``), managed
spot training by default, checkpoints synced between ``/opt/ml/checkpoints`` and
``--checkpoint-s3`` (a spot restart resumes from them), and the Hydra overrides as
hyperparameters, one per key (``learner.sagemaker_entry.encode_overrides``). The overrides
are composed here first, so a wrong key fails before anything is submitted.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from learner.sagemaker_entry import STORE_URI_ENV, encode_overrides

log = logging.getLogger(__name__)

ENTRYPOINT = ["python", "-m", "learner.sagemaker_entry"]
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


@dataclass(frozen=True)
class JobSpec:
    image: str  # ECR URI of docker/Dockerfile's image
    role: str  # IAM role SageMaker assumes (S3 read/write on both prefixes, ECR pull)
    instance_type: str
    instance_count: int
    checkpoint_s3: str  # synced with /opt/ml/checkpoints; restored on a spot restart
    output_s3: str  # model.tar.gz (the final checkpoint) and output.tar.gz (the run dir)
    overrides: tuple[str, ...]  # Hydra overrides for python -m learner
    job_name: str
    spot: bool = True  # managed spot training
    max_run_s: int = 3600  # training time limit
    max_wait_s: int = 7200  # spot: training plus waiting for capacity (>= max_run_s)
    volume_gb: int = 30
    retries: int = 0  # SageMaker RetryStrategy attempts (0: none)
    run_s3: str = ""  # the run store (store.uri): every host's records; "": OUTPUT/JOB/run


def check_spec(spec: JobSpec) -> None:
    """Everything that can be checked before calling AWS; raises ValueError."""
    if not JOB_NAME.fullmatch(spec.job_name):
        raise ValueError(f"job name {spec.job_name!r}: letters, digits and '-', at most 63")
    if spec.instance_count < 1:
        raise ValueError("--instance-count must be at least 1")
    uris = [("--checkpoint-s3", spec.checkpoint_s3), ("--output-s3", spec.output_s3)]
    uris += [("--run-s3", spec.run_s3)] if spec.run_s3 else []
    for flag, uri in uris:
        if not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise ValueError(f"{flag} must be an s3:// URI, got {uri!r}")
    if spec.spot and spec.max_wait_s < spec.max_run_s:
        raise ValueError("--max-wait must be at least --max-run with spot training")
    check_overrides(spec.overrides)


def check_overrides(overrides: Sequence[str]) -> None:
    """Compose the run's config as the container will (wrong keys and values fail here)."""
    from learner.driver import check_config
    from turnwise.config import compose_config

    encode_overrides(overrides)  # SageMaker's limits, keys the entrypoint owns
    config = compose_config(
        [*overrides, "ray.address=auto", f"checkpoint.uri={CHECKPOINT_LOCAL_PATH}"]
    )
    check_config(config)
    if config.env.simulator.mode == "connect":
        raise ValueError(
            "env.simulator.mode=connect needs a simulator sidecar, which SageMaker does not "
            "run: use inprocess or launch"
        )


def training_job_request(spec: JobSpec) -> dict[str, Any]:
    """The ``create_training_job`` keyword arguments for ``spec``."""
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_run_s}
    if spec.spot:
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait_s
    request: dict[str, Any] = {
        "TrainingJobName": spec.job_name,
        "RoleArn": spec.role,
        "AlgorithmSpecification": {
            "TrainingImage": spec.image,
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ENTRYPOINT,
        },
        "HyperParameters": encode_overrides(spec.overrides),
        "Environment": {STORE_URI_ENV: run_store_uri(spec)},
        "ResourceConfig": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
            "VolumeSizeInGB": spec.volume_gb,
        },
        "OutputDataConfig": {"S3OutputPath": spec.output_s3},
        "CheckpointConfig": {"S3Uri": spec.checkpoint_s3, "LocalPath": CHECKPOINT_LOCAL_PATH},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spec.spot,
        "Tags": [{"Key": "app", "Value": "turnwise"}],
    }
    if spec.retries > 0:
        request["RetryStrategy"] = {"MaximumRetryAttempts": spec.retries}
    return request


def run_store_uri(spec: JobSpec) -> str:
    """Where the job's records go: ``--run-s3``, a ``store.uri`` override, or
    ``<output-s3>/<job name>/run``; every host's actors write their transitions there."""
    given = [o.partition("=")[2] for o in spec.overrides if o.startswith("store.uri=")]
    return spec.run_s3 or (
        given[-1] if given else f"{spec.output_s3.rstrip('/')}/{spec.job_name}/run"
    )


def submit(request: dict[str, Any], client: Any = None) -> str:
    """Create the training job; its ARN. boto3's credential chain, region and
    ``AWS_ENDPOINT_URL`` apply."""
    if client is None:
        import boto3

        client = boto3.client("sagemaker")
    arn = client.create_training_job(**request)["TrainingJobArn"]
    log.info("created training job %s", arn)
    return arn


def default_job_name(now: float | None = None) -> str:
    return time.strftime("turnwise-%Y%m%d-%H%M%S", time.gmtime(now))


def parse_args(argv: Sequence[str] | None) -> JobSpec:
    parser = argparse.ArgumentParser(
        prog="python -m learner.sagemaker",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--image", required=True, help="ECR URI of the turnwise image")
    parser.add_argument("--role", required=True, help="ARN of the SageMaker execution role")
    parser.add_argument("--instance-type", default="ml.c5.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--checkpoint-s3", required=True, help="s3:// prefix for checkpoints")
    parser.add_argument("--output-s3", required=True, help="s3:// prefix for the model")
    parser.add_argument(
        "--run-s3", default="", help="s3:// run store (default: OUTPUT_S3/JOB_NAME/run)"
    )
    parser.add_argument("--spot", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-run", type=int, default=3600, help="seconds of training")
    parser.add_argument("--max-wait", type=int, default=7200, help="seconds, spot only")
    parser.add_argument("--volume-gb", type=int, default=30)
    parser.add_argument("--retries", type=int, default=0, help="SageMaker retry attempts")
    parser.add_argument("--job-name", default=None, help="default: turnwise-<UTC time>")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, after --")
    args = parser.parse_args(argv)
    return JobSpec(
        image=args.image,
        role=args.role,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        checkpoint_s3=args.checkpoint_s3,
        output_s3=args.output_s3,
        run_s3=args.run_s3,
        overrides=tuple(args.overrides),
        job_name=args.job_name or default_job_name(),
        spot=args.spot,
        max_run_s=args.max_run,
        max_wait_s=args.max_wait,
        volume_gb=args.volume_gb,
        retries=args.retries,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from hydra.errors import HydraException

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = parse_args(argv)
    try:
        check_spec(spec)
    except (ValueError, HydraException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    arn = submit(training_job_request(spec))
    print(arn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
