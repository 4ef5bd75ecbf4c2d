"""The external evaluator: determinism, oracle baseline, divergence alerts, restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import ray
import torch
from conftest import make_checkpoint

from evaluator.baselines import ORACLE
from evaluator.episodes import evaluation_seeds, policy_actor, run_episodes
from evaluator.evaluator import Evaluator
from evaluator.metrics import DIVERGENCE_WARMUP_ENV_STEPS, summarize
from evaluator.remote import evaluator_actor_name
from learner.driver import Trainer
from sims.declarations import declarations
from sims.warehouse import WarehouseEnv
from turnwise.checkpoint_store import open_store
from turnwise.config import EnvConfig, EvaluatorConfig, compose_config
from turnwise.policy import build_policy

REPO = Path(__file__).resolve().parent.parent
SMALL = [
    "+exp=warehouse",
    "actors.envs_per_actor=32",
    "actors.fragment_length=32",
    "train.progress=false",
]
WAREHOUSE = EnvConfig(kwargs={"size": "small"})
EVAL = EvaluatorConfig(episodes=8)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_same_checkpoint_evaluated_twice_gives_identical_results(tmp_path):
    make_checkpoint(tmp_path / "checkpoints")
    evaluator = Evaluator(str(tmp_path / "checkpoints"), WAREHOUSE, EVAL, str(tmp_path))
    first, second = evaluator.evaluate(), evaluator.evaluate()
    for row in (first, second):
        del row["seconds"], row["evaluated_at"]
    assert first == second
    assert len(evaluator.table.rows()) == 2


@pytest.mark.parametrize("who", ["policy", "oracle"])
def test_lockstep_episodes_match_episodes_run_one_at_a_time(who):
    env = WarehouseEnv()
    torch.manual_seed(0)
    policy = build_policy(env.observation_space, env.action_space, [16, 16])
    act = policy_actor(policy) if who == "policy" else ORACLE.act()
    seeds = evaluation_seeds(EVAL.seed, 6)
    together = run_episodes(WAREHOUSE, seeds, act)
    alone = [run_episodes(WAREHOUSE, [seed], act)[0] for seed in seeds]
    if who == "oracle":  # episodes that end at different steps leave the lockstep batch
        assert len({e.length for e in together}) > 1
    for a, b in zip(together, alone, strict=True):
        assert (a.seed, a.total_return, a.actions, a.visits) == (
            b.seed,
            b.total_return,
            b.actions,
            b.visits,
        )
        np.testing.assert_array_equal(a.observations, b.observations)


def test_the_oracle_scores_one_and_a_random_policy_far_lower():
    seeds = evaluation_seeds(EVAL.seed, 16)
    oracle = run_episodes(WAREHOUSE, seeds, ORACLE.act())
    optimum = float(np.mean([e.total_return for e in oracle]))
    declared = declarations(gymnasium.make("Warehouse-v0"))
    scored = summarize(oracle, None, optimum, declared)
    assert scored["fraction_of_baseline"] == pytest.approx(1.0)
    assert scored["success_rate"] == 1.0
    assert scored["milestone_without_success_rate"] == 0.0
    rng = np.random.default_rng(0)
    random = run_episodes(
        WAREHOUSE, seeds, lambda obs, envs, masks: rng.integers(6, size=len(envs))
    )
    scored = summarize(random, None, optimum, declared)
    assert scored["fraction_of_baseline"] < 0.2
    assert 0 < scored["state_coverage"] <= 1


def test_every_documented_metric_is_reported(tmp_path):
    make_checkpoint(tmp_path / "checkpoints", env_steps=DIVERGENCE_WARMUP_ENV_STEPS)
    row = Evaluator(str(tmp_path / "checkpoints"), WAREHOUSE, EVAL, str(tmp_path)).evaluate()
    for key in (
        "eval_return",
        "eval_return_std",
        "fraction_of_baseline",
        "success_rate",
        "episode_length",
        "action_entropy",
        "state_coverage",
        "visitation_entropy",
        "visitation_grid",
        "reward_components",
        "milestone_without_success_rate",
        "eval_train_ratio",
        "divergence_alert",
        "baseline_return",
    ):
        assert row[key] is not None, key
    assert set(row["reward_components"]) == {"step", "progress", "pick", "deliver", "penalty"}
    assert np.array(row["visitation_grid"]).shape == (6, 6)


def test_best_follows_the_highest_evaluation_return(tmp_path):
    store = tmp_path / "checkpoints"
    make_checkpoint(store, env_steps=1000)
    evaluator = Evaluator(str(store), WAREHOUSE, EVAL, str(tmp_path))
    evaluator.evaluate()
    assert open_store(str(store)).pointer("best") == "step-000000001000"


def test_divergence_alert_fires_below_the_threshold_and_is_recorded(tmp_path):
    make_checkpoint(  # eval far below train, past the warm-up
        tmp_path / "checkpoints", env_steps=DIVERGENCE_WARMUP_ENV_STEPS, train_return=500.0
    )
    row = Evaluator(str(tmp_path / "checkpoints"), WAREHOUSE, EVAL, str(tmp_path)).evaluate()
    assert row["eval_train_ratio"] < 0.8 and row["divergence_alert"]
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert alerts[0]["alert"] == "EvalTrainDivergence"


def test_evaluate_once_cli_prints_every_metric_and_fails_cleanly_without_checkpoints(tmp_path):
    make_checkpoint(tmp_path / "checkpoints")
    config = compose_config([*SMALL, "evaluator.episodes=4"])
    (tmp_path / "config.json").write_text(json.dumps(__import__("dataclasses").asdict(config)))
    run = subprocess.run(
        [sys.executable, "-m", "evaluator", str(tmp_path), "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["episodes"] == 4 and "fraction_of_baseline" in result
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "evaluator", str(empty), "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and "no checkpoint" in run.stderr and "Traceback" not in run.stderr


def evaluated(run_dir: Path) -> list[str]:
    path = run_dir / "evaluations.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["checkpoint"] for line in path.read_text().splitlines()]


def test_a_killed_evaluator_is_restarted_and_training_goes_on(tmp_path, wait_for):
    config = compose_config(
        [
            *SMALL,
            "train.env_steps=100000000",
            "evaluator.every_env_steps=4096",
            "evaluator.episodes=4",
            "checkpoint.keep_last=0",
        ]
    )
    trainer = Trainer(config, tmp_path)
    runner = threading.Thread(target=trainer.run)
    runner.start()
    wait_for(lambda: evaluated(tmp_path), 180, "a first evaluation")
    ray.kill(ray.get_actor(evaluator_actor_name(tmp_path)), no_restart=False)
    before = len(evaluated(tmp_path))
    steps_at_kill = trainer.counters.env_steps
    wait_for(lambda: len(evaluated(tmp_path)) >= before + 2, 180, "evaluations after the restart")
    trainer.stop()
    runner.join(timeout=300)
    names = evaluated(tmp_path)
    assert len(names) == len(set(names))  # resumed from the next unevaluated checkpoint
    assert trainer.counters.env_steps > steps_at_kill
    marked = [n for n in open_store(str(tmp_path / "checkpoints")).list()]
    assert set(names) <= set(marked)


@pytest.mark.slow
def test_a_reward_hacking_setup_raises_the_divergence_alert(tmp_path):
    """Paying every pick and no delivery: the policy farms picks in training, the
    fixed evaluation env (default rewards) shows it never delivers."""
    config = compose_config(
        [
            "+exp=warehouse",
            "train.progress=false",
            "train.env_steps=400000",
            "evaluator.every_env_steps=100000",
            "evaluator.episodes=16",
            "evaluator.divergence_warmup_env_steps=100000",
            "+env.kwargs.milestone_once_per_order=false",
            "+env.kwargs.rewards={deliver: 0.0}",
        ]
    )
    config.evaluator.env = WAREHOUSE
    Trainer(config, tmp_path).run()
    rows = [json.loads(line) for line in (tmp_path / "evaluations.jsonl").read_text().splitlines()]
    fired = [r for r in rows if r["divergence_alert"]]
    assert fired and all(r["eval_train_ratio"] < 0.8 for r in fired)
    # without farming, 3 orders pay at most ~2 (3 picks less the step costs); above 3 it farms
    assert max(r["train_return"] for r in rows) > 3
    assert (tmp_path / "alerts.jsonl").exists()
