"""The training pipeline on a real local Ray: artifacts, S3 checkpoints, failures."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import ray

from actors.transition_log import transitions
from evaluator.baselines import ORACLE
from evaluator.episodes import evaluation_seeds, mean_return, policy_actor, run_episodes
from learner.driver import Trainer, rollout_actor_name, train
from learner.progress import read_metrics
from turnwise.checkpoint import load_checkpoint
from turnwise.checkpoint_store import open_store
from turnwise.config import compose_config
from turnwise.policy import policy_from_checkpoint

SMALL = [
    "+exp=warehouse",
    "actors.envs_per_actor=32",
    "actors.fragment_length=32",
    "train.progress=false",
]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_short_run_leaves_config_metrics_transitions_and_a_checkpoint(tmp_path):
    config = compose_config([*SMALL, "train.env_steps=8000", "checkpoint.every_env_steps=4000"])
    result = train(config, tmp_path)
    assert result.counters.env_steps >= 8000
    assert json.loads((tmp_path / "config.json").read_text())["train"]["env_steps"] == 8000
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows and rows[-1]["env_steps"] == result.counters.env_steps
    logged = transitions(tmp_path).to_table(columns=["actor_id", "policy_version"])
    assert logged.num_rows >= 8000
    assert set(logged.column("actor_id").to_pylist()) == {0, 1}
    checkpoint = load_checkpoint(open_store(str(tmp_path / "checkpoints")))
    assert checkpoint.manifest["env_steps"] == result.counters.env_steps
    assert checkpoint.manifest["env_id"] == "Warehouse-v0"
    policy_from_checkpoint(checkpoint)  # loads without unpickling objects


def test_a_wall_clock_budget_ends_the_run_with_a_final_checkpoint(tmp_path):
    config = compose_config([*SMALL, "train.env_steps=100000000", "train.max_seconds=3"])
    result = train(config, tmp_path)
    assert 0 < result.counters.env_steps < 100_000_000
    assert read_metrics(tmp_path / "metrics.jsonl")[-1]["time_s"] < 3 + 30  # one batch late at most
    checkpoint = load_checkpoint(open_store(str(tmp_path / "checkpoints")))
    assert checkpoint.manifest["env_steps"] == result.counters.env_steps


def test_checkpoints_go_to_s3_and_resume_from_there(tmp_path, s3_endpoint):
    uri = "s3://turnwise/runs/r1/checkpoints"
    first = compose_config([*SMALL, "train.env_steps=4000", f"checkpoint.uri={uri}"])
    result = train(first, tmp_path)
    store = open_store(uri)
    assert store.list() and store.pointer("latest") == store.list()[-1]
    checkpoint = load_checkpoint(store)
    assert checkpoint.manifest["env_steps"] == result.counters.env_steps
    again = compose_config([*SMALL, "train.env_steps=8000", f"checkpoint.uri={uri}", "resume=true"])
    resumed = Trainer(again, tmp_path)
    assert resumed.counters.env_steps == result.counters.env_steps
    assert resumed.learner.version == checkpoint.manifest["policy_version"]
    assert resumed.run().counters.env_steps >= 8000


def test_resume_without_a_checkpoint_says_so(tmp_path):
    config = compose_config([*SMALL, "resume=true"])
    with pytest.raises(FileNotFoundError, match="resume=true"):
        Trainer(config, tmp_path)


def test_a_killed_rollout_actor_is_replaced_and_the_run_finishes(tmp_path, wait_for):
    config = compose_config([*SMALL, "train.env_steps=100000000"])
    trainer = Trainer(config, tmp_path)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=trainer.run()))
    runner.start()
    metrics = tmp_path / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and read_metrics(metrics), 120, "training to start")
    ray.kill(ray.get_actor(rollout_actor_name(tmp_path, 0)), no_restart=False)
    second_life = tmp_path / "transitions" / "actor-000" / "part-001-000001.parquet"
    wait_for(second_life.exists, 120, "the restarted actor's batches")
    trainer.stop()
    runner.join(timeout=120)
    result = outcome["result"]
    assert result.counters.actor_failures >= 1
    lives = sorted((tmp_path / "transitions" / "actor-000").glob("incarnation-*.json"))
    assert len(lives) == 2  # the replacement logs as a new incarnation, with new seeds
    seeds = [json.loads(p.read_text())["env_seeds"] for p in lives]
    assert seeds[0] != seeds[1]
    assert load_checkpoint(open_store(str(tmp_path / "checkpoints"))).manifest["env_steps"] == (
        result.counters.env_steps
    )


@pytest.mark.slow
def test_warehouse_learns_to_near_the_oracle_on_held_out_seeds(tmp_path):
    """A smaller budget than the default run, checked against a band measured
    against the oracle on evaluation seeds never used in training."""
    config = compose_config(["+exp=warehouse", "train.env_steps=500000", "train.progress=false"])
    train(config, tmp_path)
    policy = policy_from_checkpoint(load_checkpoint(open_store(str(tmp_path / "checkpoints"))))
    seeds = evaluation_seeds(config.evaluator.seed, 32)
    learned = mean_return(run_episodes(config.env, seeds, policy_actor(policy)))
    optimal = ORACLE.mean_return(config.env, seeds)
    assert learned >= 0.8 * optimal, f"learned {learned:.2f} vs oracle {optimal:.2f}"
    final = json.loads((tmp_path / "evaluations.jsonl").read_text().splitlines()[-1])
    assert final["fraction_of_baseline"] >= 0.8  # the evaluator actor saw the same
    assert not final["divergence_alert"]  # default rewards: no false alarm on a learned policy


def test_no_aws_credentials_needed_for_local_runs(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    config = compose_config([*SMALL, "train.env_steps=2000"])
    assert train(config, Path(tmp_path)).counters.env_steps >= 2000
