"""A bad checkpoint fails with one CheckpointError naming the file and what is wrong:
on load, on resume and when serving pins it (before Ray starts)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import make_checkpoint, timed_command

from turnwise.checkpoint import CheckpointError, load_checkpoint, read_manifest
from turnwise.checkpoint_store import open_store

OVERRIDES = ["+exp=warehouse", "learner.hidden_sizes=[16,16]", "train.progress=false"]


def _edit_manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(checkpoint: Path) -> None:
        path = checkpoint / "manifest.json"
        manifest = json.loads(path.read_text())
        edit(manifest)
        path.write_text(json.dumps(manifest))

    return apply


def _truncate(filename: str) -> Callable[[Path], None]:
    def apply(checkpoint: Path) -> None:
        data = (checkpoint / filename).read_bytes()
        (checkpoint / filename).write_bytes(data[: len(data) // 2])

    return apply


def _write(filename: str, data: bytes) -> Callable[[Path], None]:
    return lambda checkpoint: (checkpoint / filename).write_bytes(data)


def _drop_weight(checkpoint: Path) -> None:
    weights = torch.load(checkpoint / "weights.pt", weights_only=True)
    weights.pop("policy.0.weight")
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    (checkpoint / "weights.pt").write_bytes(buffer.getvalue())


# name: (corruption, the file the error names, what it says is wrong)
BAD: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "truncated weights": (_truncate("weights.pt"), "weights.pt", "truncated or corrupt"),
    "weights missing a key": (_drop_weight, "weights.pt", "policy.0.weight"),
    "truncated trainer": (_truncate("trainer.pt"), "trainer.pt", "truncated or corrupt"),
    "manifest not JSON": (_write("manifest.json", b"{not json"), "manifest.json", "valid JSON"),
    "manifest a JSON string": (
        _write("manifest.json", b'"step-1"'),
        "manifest.json",
        "must be a JSON object, got str",
    ),
    "policy_version seven": (
        _edit_manifest(lambda m: m.update(policy_version="seven")),
        "manifest.json",
        "policy_version must be an integer >= 0, got 'seven'",
    ),
    "missing spaces": (
        _edit_manifest(lambda m: m.pop("observation_space")),
        "manifest.json",
        "observation_space is missing",
    ),
    "bad spaces JSON": (
        _edit_manifest(lambda m: m.update(action_space={"type": "Sphere"})),
        "manifest.json",
        "action_space must be a space description",
    ),
    "config without learner": (
        _edit_manifest(lambda m: m["config"].pop("learner")),
        "manifest.json",
        "config.learner is missing",
    ),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A run directory holding one valid checkpoint."""
    run = tmp_path_factory.mktemp("good")
    make_checkpoint(run / "checkpoints", overrides=tuple(OVERRIDES))
    return run


@pytest.fixture(params=sorted(BAD))
def bad_run(request, good_run, tmp_path) -> tuple[Path, str, str]:
    """(a run directory whose only checkpoint is broken one way, its file, the problem)."""
    corrupt, filename, problem = BAD[request.param]
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (checkpoint,) = (run / "checkpoints").glob("step-*")
    corrupt(checkpoint)
    return run, str(checkpoint / filename), problem


def _checkpoint_dir(run: Path) -> Path:
    return next((run / "checkpoints").glob("step-*"))


def test_a_good_checkpoint_loads(good_run):
    from serving.source import parse_source

    checkpoint = load_checkpoint(open_store(str(good_run / "checkpoints")))
    assert checkpoint.manifest["policy_version"] == 10 and checkpoint.weights
    assert parse_source(str(_checkpoint_dir(good_run))).checkpoint == checkpoint.name


def test_loading_names_the_file_and_the_problem(bad_run):
    run, path, problem = bad_run
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(open_store(str(run / "checkpoints")))
    assert path in str(caught.value) and problem in str(caught.value)


@pytest.fixture(scope="module")
def resume_config():
    from turnwise.config import compose_config

    return compose_config([*OVERRIDES, "resume=true"])


def test_resume_stops_before_ray_naming_the_file(bad_run, resume_config):
    from learner.driver import Trainer

    run, path, problem = bad_run
    with pytest.raises(CheckpointError) as caught:
        Trainer(resume_config, run)
    assert path in str(caught.value) and problem in str(caught.value)


def test_serving_refuses_a_bad_pinned_checkpoint(bad_run):
    from serving.source import parse_source

    run, path, problem = bad_run
    with pytest.raises(CheckpointError) as caught:
        parse_source(str(_checkpoint_dir(run)))
    assert path in str(caught.value) and problem in str(caught.value)


def test_a_bad_manifest_alone_is_refused_by_read_manifest(good_run, tmp_path):
    store_dir = tmp_path / "checkpoints"
    shutil.copytree(good_run / "checkpoints", store_dir)
    checkpoint = _checkpoint_dir(tmp_path)
    _edit_manifest(lambda m: m.update(env_steps=1.5))(checkpoint)
    with pytest.raises(CheckpointError, match=r"manifest\.json: env_steps must be an integer"):
        read_manifest(open_store(str(store_dir)), checkpoint.name)


def test_python_m_serving_fails_fast_on_a_bad_pinned_checkpoint(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    checkpoint = _checkpoint_dir(run)
    _edit_manifest(lambda m: m.update(policy_version="seven"))(checkpoint)
    code, stdout, stderr, elapsed = timed_command(["-m", "serving", str(checkpoint)])
    output = stdout + stderr
    assert code == 2, output[-2000:]
    assert f"{checkpoint}/manifest.json: " in output and "policy_version" in output
    assert "Traceback" not in output and "Failed to update the deployments" not in output
    assert elapsed < 30  # before Ray starts (Serve's deploy failure took about 50 s)
