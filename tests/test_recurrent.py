"""The recurrent policy core (``learner.model.core=lstm|gru``): its state interface, the
rollout's ``state`` column and resets, truncated BPTT in the learner, the evaluator, and
a memory task that an LSTM learns and an MLP cannot (a test-local "remember the cue" env
whose optimum and memoryless ceiling are known exactly)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray
import torch
from conftest import REPO
from gymnasium import spaces

from actors.envs import describe_env
from actors.replay import verify_episode
from actors.rollout import RolloutWorker
from actors.transition_log import transitions
from evaluator.episodes import policy_actor, run_episodes
from learner.driver import train
from learner.ppo import PPOLearner, to_rollout
from turnwise.checkpoint import load_checkpoint
from turnwise.checkpoint_store import open_store
from turnwise.config import ActorsConfig, Config, compose_config
from turnwise.policy import build_policy, policy_from_checkpoint
from turnwise.schema import (
    SCHEMA_VERSION,
    check_schema,
    column_matrix,
    column_numpy,
    transition_schema,
)

sys.path.insert(0, str(REPO / "tests"))  # space_envs: Reorder-v0 (Tuple obs, MultiDiscrete)


# -- a memory task with a known optimum ----------------------------------------------------
class CueEnv(gymnasium.Env):
    """A cue (left or right) is shown only at step 0; ``delay`` blank steps follow; at the
    query step the action that matches the cue pays 1 and the episode ends. Optimum 1.0;
    a memoryless policy sees the same query observation whatever the cue, so it gets at
    most the share of episodes whose cue is its one answer (0.5 in expectation)."""

    version = "cue-1"

    def __init__(self, delay: int = 2) -> None:
        self.delay = delay
        self.observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)  # cue L, cue R, query
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        if self.t <= self.delay:
            return self._obs(), 0.0, False, False, {}
        return self._obs(), float(int(action) == self.cue), True, False, {}

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3, dtype=np.float32)
        if self.t == 0:
            obs[self.cue] = 1.0
        obs[2] = float(self.t == self.delay)
        return obs


if "RecurrentCue-v0" not in gymnasium.registry:
    gymnasium.register(id="RecurrentCue-v0", entry_point=CueEnv)

CUE = ["env.id=RecurrentCue-v0", "learner.normalizer.kind=none", "learner.hidden_sizes=[32,32]"]


def cue_config(core: str, *extra: str) -> Config:
    return compose_config(
        [*CUE, f"learner.model.core={core}", "learner.model.core_size=32", *extra]
    )


def worker(config: Config, run_dir: Path, envs: int = 4, steps: int = 10) -> RolloutWorker:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    actors = ActorsConfig(envs_per_actor=envs, fragment_length=steps)
    return RolloutWorker(0, config.env, actors, config.learner, 7, str(run_dir))


def learner_for(config: Config) -> PPOLearner:
    info = describe_env(config.env)
    return PPOLearner(info.observation_space, info.action_space, config.learner, "cpu")


def frames(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """A column as a writable (T, B, ...) time-major array."""
    envs = int(column_numpy(batch, "env_index").max()) + 1
    kind = batch.schema.field(name).type
    array = (column_matrix if pa.types.is_fixed_size_list(kind) else column_numpy)(batch, name)
    return np.array(array).reshape(-1, envs, *array.shape[1:])


# -- the network and its state ---------------------------------------------------------------
@pytest.mark.parametrize(("core", "size"), [("mlp", 0), ("lstm", 16), ("gru", 8)])
def test_state_size_and_initial_state(core, size):
    model = build_policy(spaces.Box(-1, 1, (5,)), spaces.Discrete(3), [16], core=core, core_size=8)
    assert model.state_size == size and model.recurrent == (core != "mlp")
    state = model.initial_state(3)
    assert state.shape == (3, size) and state.dtype == np.float32 and not state.any()


def test_an_mlp_is_todays_network_and_act_recurrent_passes_an_empty_state():
    torch.manual_seed(0)
    old = build_policy(spaces.Box(-1, 1, (5,)), spaces.Discrete(3), [16, 16])
    torch.manual_seed(0)
    new = build_policy(spaces.Box(-1, 1, (5,)), spaces.Discrete(3), [16, 16], core="mlp")
    assert old.state_dict().keys() == new.state_dict().keys()
    for key, value in old.state_dict().items():
        assert torch.equal(value, new.state_dict()[key]), key
    obs = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    torch.manual_seed(1)
    expected = new.act(obs)
    torch.manual_seed(1)
    *got, state = new.act_recurrent(obs, new.initial_state(4))
    assert state.shape == (4, 0)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_an_unroll_over_a_fragment_equals_act_recurrent_step_by_step(core):
    torch.manual_seed(0)
    model = build_policy(spaces.Box(-1, 1, (5,)), spaces.Discrete(3), [16], core=core, core_size=8)
    rng = np.random.default_rng(0)
    steps, envs = 12, 4
    obs = rng.normal(size=(steps, envs, 5)).astype(np.float32)
    starts = rng.random((steps, envs)) < 0.2
    state0 = rng.normal(size=(envs, model.state_size)).astype(np.float32)
    state, logps, values, states = state0.copy(), [], [], []
    for t in range(steps):
        state = np.where(starts[t, :, None], 0.0, state)  # the caller's reset at a start
        _, logp, value, state = model.act_recurrent(obs[t], state, greedy=True)
        logps.append(logp)
        values.append(value)
        states.append(state)
    with torch.no_grad():
        args = torch.from_numpy(obs), torch.from_numpy(state0), torch.from_numpy(starts)
        params, unrolled, final = model.unroll(*args)
        _, stepwise, every = model.unroll(*args, every_step=True)
        dist = model.head.distribution(params)
        mode_logp = dist.log_prob(dist.mode())
    np.testing.assert_allclose(mode_logp.numpy(), np.stack(logps), atol=1e-5)
    np.testing.assert_allclose(unrolled.numpy(), np.stack(values), atol=1e-5)
    np.testing.assert_allclose(stepwise.numpy(), np.stack(values), atol=1e-5)
    np.testing.assert_allclose(every.numpy(), np.stack(states), atol=1e-5)
    np.testing.assert_allclose(final.numpy(), states[-1], atol=1e-5)


def test_a_recurrent_model_refuses_a_stateless_forward():
    model = build_policy(spaces.Box(-1, 1, (5,)), spaces.Discrete(3), [16], core="gru")
    with pytest.raises(ValueError, match="needs its state"):
        model.act(np.zeros((1, 5), np.float32))


def test_a_wrong_core_fails_before_ray_naming_the_key_and_choices():
    with pytest.raises(
        ValueError, match=r"learner\.model\.core=rnn: must be one of mlp, lstm, gru"
    ):
        compose_config(["learner.model.core=rnn"])
    with pytest.raises(ValueError, match=r"learner\.model\.core_size=0: must be >= 1"):
        compose_config(["learner.model.core_size=0"])


# -- the batch column ----------------------------------------------------------------------
def test_the_state_column_is_nullable_and_only_for_recurrent_models():
    obs, act = spaces.Box(-1, 1, (2,)), spaces.Discrete(2)
    plain = transition_schema(obs, act, [], "X-v0", "1")
    recurrent = transition_schema(obs, act, [], "X-v0", "1", state_size=6)
    assert "state" not in plain.names
    field = recurrent.field("state")
    assert field.nullable and field.type == pa.list_(pa.float32(), 6)
    assert recurrent.metadata[b"turnwise.schema_version"] == SCHEMA_VERSION.encode() == b"2"
    old = plain.with_metadata({**plain.metadata, b"turnwise.schema_version": b"1"})
    check_schema(old, plain)  # a version-1 batch reads as version 2 without the state column


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_rollout_carries_the_state_resets_it_at_episode_starts_and_logs_it(tmp_path, core):
    config = cue_config(core)
    torch.manual_seed(0)
    w = worker(config, tmp_path, envs=4, steps=5)  # 3-step episodes cross fragments
    first, second = w.sample(None), w.sample(None)
    for batch in (first, second):
        state = batch.column("state")
        valid = state.is_valid().to_numpy(zero_copy_only=False)
        assert valid[:4].all() and not valid[4:].any()  # on the t=0 rows only
    model, state_size = w.policy, w.policy.state_size
    for batch in (first, second):
        # the logged log-probs and values are the unroll's from the logged initial state,
        # zeroed where an episode starts inside the fragment
        with torch.no_grad():
            params, values, final = model.unroll(
                torch.from_numpy(frames(batch, "obs")),
                torch.from_numpy(column_matrix(batch.slice(0, 4), "state").copy()),
                torch.from_numpy(frames(batch, "step") == 0),
            )
            actions = torch.from_numpy(frames(batch, "action"))
            logp = model.head.distribution(params).log_prob(actions)
        np.testing.assert_allclose(logp.numpy(), frames(batch, "logp"), atol=1e-5)
        np.testing.assert_allclose(values.numpy(), frames(batch, "value"), atol=1e-5)
    carried = final.new_tensor(column_matrix(first.slice(0, 4), "state")).numpy()
    start = column_matrix(second.slice(0, 4), "state")
    new_episode = frames(second, "step")[0] == 0
    assert not start[new_episode].any()  # zeros where an episode starts at t=0
    with torch.no_grad():
        params, values, final_first = model.unroll(
            torch.from_numpy(frames(first, "obs")),
            torch.from_numpy(carried.copy()),
            torch.from_numpy(frames(first, "step") == 0),
        )
    np.testing.assert_allclose(start[~new_episode], final_first.numpy()[~new_episode], atol=1e-5)
    assert start.shape == (4, state_size) and np.abs(start[~new_episode]).sum() > 0


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_the_learner_bootstraps_with_the_state_carried_through_the_fragment(tmp_path, core):
    """A fragment's last bootstrap value is read with the state after its last step: the
    value the actor logged for the same observation at the next fragment's start."""
    config = cue_config(core)
    learner = learner_for(config)
    w = worker(config, tmp_path, envs=4, steps=7)
    w.set_weights(learner.weights())
    first, second = w.sample(None), w.sample(None)
    data = to_rollout(first, torch.device("cpu"))
    with torch.no_grad():
        logp, _, boot = learner._sequence_values(data)
    np.testing.assert_allclose(logp.numpy(), column_numpy(first, "logp"), atol=1e-5)
    last = (data.bootstrap_index >= 6 * 4).numpy()  # the rows of the fragment's last step
    envs = data.bootstrap_index.numpy()[last] - 6 * 4
    assert len(envs) > 0
    np.testing.assert_allclose(boot.numpy()[last], frames(second, "value")[0, envs], atol=1e-5)


# -- learner, evaluator and checkpoints for other spaces -----------------------------------------
SPACES = {
    "warehouse-dict-masked": ["env.kwargs={observation: dict, action_mask: true}"],
    "reorder-multidiscrete": ["env.id=space_envs:Reorder-v0"],
    "lqr-box": ["env.id=LinearQuadratic-v0"],
}


@pytest.mark.parametrize("name", SPACES)
def test_a_recurrent_core_trains_and_evaluates_other_spaces(tmp_path, name):
    config = compose_config(
        [
            *SPACES[name],
            "learner.hidden_sizes=[16]",
            "learner.model.core=gru",
            "learner.model.core_size=16",
            "learner.minibatch_size=40",
        ]
    )
    torch.manual_seed(0)
    w = worker(config, tmp_path, envs=4, steps=20)
    learner = learner_for(config)
    batch = w.sample(learner.weights())
    stats = learner.update(batch)
    assert all(np.isfinite(v) for v in stats.values()), stats
    assert abs(stats["importance_weight"] - 1.0) < 1e-2  # the learner's unroll is the actor's
    assert stats["gradient_steps"] == config.learner.epochs * 2  # 2 envs per minibatch
    w.set_weights(learner.weights())
    w.sample(None)
    for episode in sorted(set(transitions(tmp_path).to_table()["episode_id"].to_pylist()))[:3]:
        assert verify_episode(tmp_path, episode).ok
    model = learner.model.eval()
    episodes = run_episodes(config.env, [1, 2], policy_actor(model))
    assert all(e.length > 0 and np.isfinite(e.total_return) for e in episodes)


def test_evaluation_keeps_one_state_per_episode(tmp_path):
    """Episodes run in lockstep give each env its own state: an episode's actions do not
    depend on which others run beside it, nor on when they end."""
    config = compose_config(
        ["+exp=cartpole", "learner.model.core=lstm", "learner.model.core_size=8"]
    )
    torch.manual_seed(0)
    model = learner_for(config).model.eval()
    together = run_episodes(config.env, [3, 4, 5], policy_actor(model))
    alone = run_episodes(config.env, [4], policy_actor(model))
    assert len({e.length for e in together}) > 1  # they end at different steps
    assert together[1].actions == alone[0].actions


def test_a_checkpoint_rebuilds_the_recurrent_policy_and_old_ones_are_mlps(tmp_path):
    from turnwise.checkpoint import save_checkpoint
    from turnwise.spaces import space_to_json

    config = cue_config("lstm")
    learner, info = learner_for(config), describe_env(config.env)
    manifest = {
        "env_id": info.env_id,
        "env_version": info.version,
        "observation_space": space_to_json(info.observation_space),
        "action_space": space_to_json(info.action_space),
        "env_steps": 10,
        "policy_version": 1,
        "config": dataclasses.asdict(config),
    }
    store = open_store(str(tmp_path / "store"))
    save_checkpoint(store, learner.model.state_dict(), {}, manifest)
    model = policy_from_checkpoint(load_checkpoint(store))
    assert model.core_kind == "lstm" and model.state_size == 64
    for key, value in learner.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    del manifest["config"]["learner"]["model"]  # a checkpoint from before recurrent cores
    old = build_policy(info.observation_space, info.action_space, [32, 32], "none")
    save_checkpoint(store, old.state_dict(), {}, {**manifest, "env_steps": 20})
    assert policy_from_checkpoint(load_checkpoint(store)).state_size == 0


# -- it learns what needs memory -------------------------------------------------------------
EVAL_SEEDS = list(range(100, 164))


def memoryless_ceiling(seeds: list[int]) -> float:
    """The best greedy memoryless return on these seeds: always give the commoner cue."""
    env = CueEnv()
    lefts = 0
    for seed in seeds:
        env.reset(seed=seed)
        lefts += env.cue == 0
    return max(lefts, len(seeds) - lefts) / len(seeds)


def train_in_process(config: Config, run_dir: Path, updates: int) -> float:
    """``updates`` PPO updates on one in-process actor; the greedy return on EVAL_SEEDS."""
    torch.manual_seed(0)
    w = worker(config, run_dir, envs=32, steps=16)
    learner = learner_for(config)
    for _ in range(updates):
        learner.update(w.sample(learner.weights()))
    model = learner.model.eval()
    episodes = run_episodes(config.env, EVAL_SEEDS, policy_actor(model))
    return float(np.mean([e.total_return for e in episodes]))


LEARN = ["learner.lr=3e-3", "learner.epochs=4", "learner.minibatch_size=128"]


@pytest.mark.parametrize("core", ["lstm", "mlp"])
def test_an_lstm_remembers_the_cue_and_an_mlp_cannot(tmp_path, core):
    """Optimum 1.0; the memoryless ceiling on EVAL_SEEDS is the commoner cue's share."""
    ceiling = memoryless_ceiling(EVAL_SEEDS)
    assert 0.4 < ceiling < 0.6
    ret = train_in_process(cue_config(core, *LEARN, "env.kwargs={delay: 5}"), tmp_path, 12)
    if core == "lstm":
        assert ret >= 0.95, ret
    else:
        assert ret <= ceiling, ret


# -- the whole path, with Ray and the evaluator ---------------------------------------------------
@pytest.mark.slow
def test_cartpole_trains_end_to_end_with_an_lstm(tmp_path):
    overrides = ["+exp=cartpole", "learner.model.core=lstm", "learner.model.core_size=16"]
    overrides += ["train.env_steps=4096", "evaluator.every_env_steps=2048", "evaluator.episodes=4"]
    overrides += ["actors.envs_per_actor=8", "actors.fragment_length=64"]
    overrides += ["train.progress=false", "monitoring.metrics_port=0"]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = train(compose_config(overrides), tmp_path)
    finally:
        ray.shutdown()
    evaluations = [json.loads(line) for line in (tmp_path / "evaluations.jsonl").open()]
    assert evaluations and all(np.isfinite(e["eval_return"]) for e in evaluations), evaluations
    model = policy_from_checkpoint(load_checkpoint(open_store(str(tmp_path / "checkpoints"))))
    assert model.core_kind == "lstm" and result.counters.env_steps >= 4096
    table = transitions(tmp_path).to_table()
    assert table.schema.field("state").type == pa.list_(pa.float32(), 32)
    episode = table.filter(pc.field("episode_return").is_valid())["episode_id"][0]
    assert verify_episode(tmp_path, episode.as_py()).ok
