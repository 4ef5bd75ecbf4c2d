"""Sample Factory 2 behind the benchmark interface, on a tiny budget (its own venv,
made by ``benchmarks.sample_factory_env`` on first use)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest
import torch

from benchmarks.sample_factory_env import sample_factory_python
from benchmarks.systems import sample_factory_appo as sf
from benchmarks.systems.common import TASKS, Budget, Settings, evaluate

pytestmark = pytest.mark.slow

TASK = TASKS["warehouse"]
SETTINGS = Settings()  # 16 envs: 2 workers x 8 (the tiny budget ends at its step cap)


@pytest.fixture(scope="module")
def python():
    path, error = sample_factory_python()
    assert path is not None, error
    return path


def test_throughput_counts_learner_env_steps(python):
    result = sf.throughput(TASK, 3.0, SETTINGS)
    assert result["system"] == "sample_factory" and result["task"] == "warehouse"
    assert result["env_steps"] > 0 and result["seconds"] >= 3.0
    assert result["env_steps_per_second"] == result["env_steps"] / result["seconds"]
    assert result["sample_factory_options"]["num_envs_per_worker"] == 8


def test_time_to_solve_evaluates_each_checkpoint_on_the_common_seeds(python, monkeypatch):
    scores = []

    def spy(task, act):
        scores.append(evaluate(task, act))
        return scores[-1]

    monkeypatch.setattr(sf, "evaluate", spy)
    budget = Budget(seconds=10.0, env_steps=8_000, eval_every_env_steps=4_000)
    result = sf.time_to_solve(TASK, budget, SETTINGS)
    curve = result["curve"]
    assert result["stopped_by"] in {"solved", "step cap", "time cap"}
    assert len(curve) == len(scores) >= 1
    for point, score in zip(curve, scores, strict=True):
        assert point["eval_return"] == score["eval_return"]
        assert point["fraction_of_baseline"] is not None
        assert point["seconds"] >= 0.0 and point["env_steps"] > 0
    assert [p["env_steps"] for p in curve] == sorted(p["env_steps"] for p in curve)


def test_matched_extra_is_turnwise_warehouse():
    extra = sf.matched_extra()
    rows = extra["num_envs_per_worker"] * extra["rollout"]
    assert extra["num_envs"] == extra["num_workers"] * extra["num_envs_per_worker"]
    assert rows == extra["batch_size"] * extra["num_batches_per_epoch"] == 4096
    assert (extra["num_epochs"], extra["batch_size"], extra["learning_rate"]) == (3, 2048, 1e-3)
    assert extra["with_vtrace"] and extra["recurrence"] == extra["rollout"]
    assert not set(extra) & set(sf.FIXED)


SF_FORWARD = """
import json, sys, torch
from sample_factory.model.actor_critic import create_actor_critic
from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
import gymnasium
argv = ["--env", "CartPole-v1", *json.loads(sys.argv[1])]
parser, _ = parse_sf_args(argv=argv)
cfg = parse_full_cfg(parser, argv)
env = gymnasium.make("CartPole-v1")
obs_space = gymnasium.spaces.Dict(obs=env.observation_space)
model = create_actor_critic(cfg, obs_space, env.action_space)
torch.manual_seed(1)
for p in model.parameters():
    p.data.normal_()
stats = model.obs_normalizer.running_mean_std.running_mean_std.obs
stats.running_mean[:] = torch.linspace(-1, 1, 4, dtype=torch.float64)
stats.running_var[:] = torch.linspace(0.5, 2, 4, dtype=torch.float64)
model.eval()
obs = torch.randn(64, 4) * 3
normalized = model.normalize_obs({"obs": obs.clone()})
out = model(normalized, torch.zeros(64, 1))
torch.save({"state": model.state_dict(), "obs": obs, "logits": out["action_logits"]}, sys.argv[2])
"""


@pytest.mark.parametrize("share", [True, False])
def test_greedy_actor_is_sample_factorys_forward(python, tmp_path, share):
    """The adapter's rebuilt actor gives Sample Factory's own logits' argmax."""
    options = sf.sample_factory_options(
        TASKS["cartpole"], Settings(extra={"actor_critic_share_weights": share}), tmp_path
    )
    out = tmp_path / "forward.pt"
    argv = sf._argv({k: v for k, v in options.items() if k not in ("train_dir", "experiment")})
    subprocess.run(
        [str(python), "-c", textwrap.dedent(SF_FORWARD), json.dumps(argv), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    saved = torch.load(out, weights_only=True)
    space = TASKS["cartpole"].make_env().action_space
    actions = sf.greedy_actor(saved["state"], space)(saved["obs"].numpy())
    np.testing.assert_array_equal(actions, saved["logits"].argmax(-1).numpy())
