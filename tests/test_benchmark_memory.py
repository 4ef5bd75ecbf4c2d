"""benchmarks.memory's harness, without its timings: RecurrentPPO gets the settings of
``+exp=warehouse_memory``, its greedy evaluation keeps one LSTM state per episode (equal
to sb3-contrib's own loop over one env), and the report names who reached 90%."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecNormalize

from benchmarks import memory
from benchmarks.systems import sb3_recurrent_ppo
from benchmarks.systems.common import TASKS, Settings
from evaluator.episodes import run_episodes
from turnwise.config import compose_config


def test_recurrent_ppo_gets_the_experiments_settings():
    config = compose_config(memory.EXPERIMENT)
    settings = memory.matched()
    assert settings["num_envs"] * settings["n_steps"] == (
        config.actors.envs_per_actor * config.actors.fragment_length
    )  # rows per update: one turnwise update is one actor's batch
    assert settings["batch_size"] == config.learner.minibatch_size
    assert settings["n_epochs"] == config.learner.epochs
    assert settings["learning_rate"] == config.learner.lr
    assert settings["lstm_hidden_size"] == config.learner.model.core_size
    assert config.learner.model.core in {"lstm", "gru"}


def test_the_greedy_evaluation_keeps_one_lstm_state_per_episode():
    task = TASKS["warehouse_memory"]
    extra = {"n_steps": 8, "batch_size": 16, "lstm_hidden_size": 8, "normalize": True}
    extra["shared_lstm"] = True
    model = sb3_recurrent_ppo._build(task, Settings(num_envs=2, extra=extra))
    model.learn(16)  # VecNormalize's statistics move off their start
    assert model.policy.shared_lstm and isinstance(model.get_env(), VecNormalize)
    seeds = [5, 6, 7]
    together = run_episodes(task.env_config, seeds, sb3_recurrent_ppo.recurrent_act(model))
    for seed, episode in zip(seeds, together, strict=True):
        env = task.make_env()
        obs, _ = env.reset(seed=seed)
        state, start, actions, done = None, np.ones(1, dtype=bool), [], False
        while not done:
            seen = model.get_env().normalize_obs(obs[None])
            action, state = model.predict(seen, state, start, deterministic=True)
            start[:] = False
            obs, _, terminated, truncated, _ = env.step(int(action[0]))
            actions.append(int(action[0]))
            done = terminated or truncated
        assert tuple(actions) == episode.actions, seed
    model.get_env().close()


def test_the_report_says_who_reached_90_percent():
    rows = [
        {"run": "turnwise", "runs": 2, "solved": 2, "seconds": {"median": 60, "min": 50,
         "max": 70}, "env_steps": {"median": 1e6, "min": 9e5, "max": 1.1e6},
         "best_fraction": {"median": 0.95, "min": 0.93, "max": 0.97}},
        {"run": "sb3-contrib RecurrentPPO", "runs": 2, "solved": 0, "seconds": None,
         "env_steps": None, "best_fraction": {"median": 0.3, "min": 0.2, "max": 0.4},
         "env_steps_at_end": {"median": 6e5, "min": 6e5, "max": 6e5}},
    ]  # fmt: skip
    text = memory.verdict(rows)
    assert "turnwise reached 90% of the oracle in 2 of 2 runs, after 60 (50 to 70) s" in text
    assert (
        "RecurrentPPO did not within the cap: 600,000 env steps in, its best evaluation at "
        "0.30 (0.20 to 0.40)" in text
    )


def test_learning_per_env_step_is_read_where_the_shortest_run_ended():
    def run(label, points):
        return {
            "run": label,
            "curve": [{"env_steps": s, "fraction_of_baseline": f} for s, f in points],
        }

    results = [
        run("turnwise", [(100, 0.1), (200, 0.5), (300, 0.95)]),
        run("sb3-contrib RecurrentPPO", [(100, 0.0), (250, 0.2)]),
    ]
    text = memory.per_step(results)
    assert text.startswith("Best evaluation by 250 env steps")
    assert "turnwise 0.50" in text and "RecurrentPPO 0.20" in text
