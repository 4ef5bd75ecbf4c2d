"""The batched WarehouseVectorEnv against Gymnasium's SyncVectorEnv of single envs."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from conftest import step_alike
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import sims  # noqa: F401  (registers Warehouse-v0)
from sims.warehouse import WarehouseEnv, WarehouseOracle, WarehouseVectorEnv, oracle_actions


def reference(num_envs: int, size: str) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda: WarehouseEnv(size=size) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


def mixed_actions(vec: WarehouseVectorEnv, rng: np.random.Generator) -> np.ndarray:
    """Oracle moves mixed with random ones, from mostly random in env 0 (shifts run
    out of steps) to mostly oracle in the last env (shifts complete)."""
    random = rng.integers(0, 6, vec.num_envs)
    share = np.linspace(0.1, 0.9, vec.num_envs)
    return np.where(rng.random(vec.num_envs) < share, oracle_actions(vec), random)


def ref_components(info: dict, done: np.ndarray, i: int) -> dict:
    source = info["final_info"] if done[i] else info
    return {k: v[i] for k, v in source["reward_components"].items() if not k.startswith("_")}


@pytest.mark.parametrize(("size", "seed"), [("small", 0), ("small", 123), ("medium", 9)])
def test_vector_env_matches_single_envs_step_for_step_across_autoresets(size, seed):
    num_envs, rng = 6, np.random.default_rng(seed)
    fast, slow = WarehouseVectorEnv(num_envs, size=size), reference(num_envs, size)
    obs_fast, info_fast = fast.reset(seed=seed)
    obs_slow, info_slow = slow.reset(seed=seed)
    np.testing.assert_array_equal(obs_fast, obs_slow)
    np.testing.assert_array_equal(info_fast["inventory"], info_slow["inventory"])
    terminations = truncations = 0
    for _ in range(1500):
        actions = mixed_actions(fast, rng)
        f_term, f_trunc, f_info, s_info = step_alike(fast, slow, actions)
        done = f_term | f_trunc
        for i in range(num_envs):
            parts = {k: v[i] for k, v in f_info["reward_components"].items()}
            assert parts == ref_components(s_info, done, i)
            if done[i]:
                np.testing.assert_array_equal(f_info["final_obs"][i], s_info["final_obs"][i])
        for i, sub in enumerate(slow.envs):
            np.testing.assert_array_equal(fast.inventory[i], sub.unwrapped.inventory)
        terminations += f_term.sum()
        truncations += f_trunc.sum()
    assert terminations > 20 and truncations > 0, "the test must cross both kinds of ending"


def test_vector_env_declares_same_step_autoreset():
    assert WarehouseVectorEnv(2).metadata["autoreset_mode"] == AutoresetMode.SAME_STEP


def test_make_vec_uses_the_batched_implementation():
    vec = gymnasium.make_vec("Warehouse-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(vec.unwrapped, WarehouseVectorEnv)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, *vec.single_observation_space.shape)


def test_vectorized_oracle_agrees_with_the_single_oracle():
    vec, single, oracle = WarehouseVectorEnv(4), WarehouseEnv(), WarehouseOracle()
    vec.reset(seed=30)
    single.reset(seed=32)  # env 2 of the vector
    for _ in range(300):
        actions = oracle_actions(vec)
        assert actions[2] == oracle.act(single)
        _, _, _, trunc, _ = vec.step(actions)
        _, _, s_term, s_trunc, _ = single.step(int(actions[2]))
        assert not trunc.any()
        if s_term or s_trunc:
            single.reset()


def test_vector_env_rejects_bad_actions_and_seeds():
    vec = WarehouseVectorEnv(3)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros(3, dtype=int))
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.array([0, 1, 9]))
    with pytest.raises(ValueError, match="seeds"):
        vec.reset(seed=[1, 2])


def test_vector_env_matches_with_a_hackable_milestone():
    """The non-default reward switch behaves the same in both implementations."""
    num_envs, rng = 4, np.random.default_rng(5)
    fast = WarehouseVectorEnv(num_envs, milestone_once_per_order=False)
    slow = SyncVectorEnv(
        [lambda: WarehouseEnv(milestone_once_per_order=False) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    np.testing.assert_array_equal(fast.reset(seed=1)[0], slow.reset(seed=1)[0])
    for _ in range(400):
        actions = mixed_actions(fast, rng)
        np.testing.assert_array_equal(fast.step(actions)[1], slow.step(actions)[1])
