"""Warehouse-Memory-v0: the order is shown only on its issue step; its known optimum and
the measured ceiling of a policy without memory."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from conftest import step_alike
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import sims
from sims.check import run_checks
from sims.warehouse import WarehouseEnv, WarehouseOracle, WarehouseVectorEnv, optimal_return
from sims.warehouse.config import MEMORY_VARIANT, make_config
from sims.warehouse.layout import DOWN, DROP, PICK, UP
from sims.warehouse.memory import guess_actions, measure_ceiling, memoryless_bound
from sims.warehouse.oracle import oracle_actions

K = 3  # items of the small warehouse
ORDER = slice(8 + 3 * K, 9 + 4 * K)  # the order one-hot in the flat observation
TARGET = slice(2, 5)  # target offset and at-target


def memory_env(**overrides) -> WarehouseEnv:
    return WarehouseEnv(**{**MEMORY_VARIANT, **overrides})


def test_registered_variant_is_the_small_warehouse_with_memory():
    env = gymnasium.make(sims.WAREHOUSE_MEMORY_ID).unwrapped
    assert env.config == make_config("small", **MEMORY_VARIANT)
    assert env.config.memory and env.config.orders_per_shift == 1
    assert env.state_variables["briefing"] == "episode"
    assert "briefing" not in WarehouseEnv().state_variables  # Warehouse-v0 declares as before
    vec = gymnasium.make_vec(sims.WAREHOUSE_MEMORY_ID, 2, vectorization_mode="vector_entry_point")
    assert isinstance(vec.unwrapped, WarehouseVectorEnv) and vec.unwrapped.config.memory
    assert vec.unwrapped.version == env.version != WarehouseEnv().version


def test_the_order_is_shown_on_its_issue_step_only_and_that_action_is_not_carried_out():
    env = memory_env(orders_per_shift=2, max_steps=60)
    obs, _ = env.reset(seed=3)
    first = env.current_item
    assert obs[ORDER].argmax() == 1 + first and obs[ORDER].sum() == 1
    assert np.any(obs[TARGET] != 0)  # where the ordered item's shelf is, from the drop-off
    robot = env.robot
    for action in (UP, DOWN, PICK, DROP):  # whatever is asked on the issue step
        probe = memory_env(orders_per_shift=2, max_steps=60)
        probe.reset(seed=3)
        after, reward, *_, info = probe.step(action)
        assert probe.robot == robot and probe.carrying == 0
        assert info["reward_components"]["step"] == reward == probe.config.rewards.step
        assert not after[ORDER].any() and not after[TARGET].any()  # hidden from now on
    oracle, shown, delivered = WarehouseOracle(), [], 0
    while delivered == 0:  # the first order: fetched and delivered by the oracle
        obs, *_, info = env.step(oracle.act(env))
        shown.append(bool(obs[ORDER].any() or obs[TARGET].any()))
        delivered = info["orders_delivered"]
    assert shown == [False] * (len(shown) - 1) + [True]  # the delivery issues the second
    assert obs[ORDER].argmax() == 1 + env.current_item
    obs, *_ = env.step(oracle.act(env))
    assert not obs[ORDER].any() and not obs[TARGET].any()


def test_a_wrong_delivery_loses_the_order():
    env = memory_env()
    env.reset(seed=0)
    wrong = next(k for k in range(K) if k != env.current_item)
    env.step(UP)  # the issue step
    env.robot, env.carrying = env.shift.dropoff, 1 + wrong  # as if fetched from its shelf
    _, reward, terminated, truncated, info = env.step(DROP)
    assert terminated and not truncated
    assert reward == pytest.approx(env.config.rewards.step + env.config.rewards.wrong_drop)
    assert info["orders_delivered"] == 0 and not info["is_success"]
    assert env.carrying == 0


def reference(num_envs: int, **overrides) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda: memory_env(**overrides) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


@pytest.mark.parametrize("overrides", [{}, {"orders_per_shift": 3, "max_steps": 90}])
def test_vector_env_matches_single_envs_step_for_step(overrides):
    num_envs, rng = 6, np.random.default_rng(1)
    fast = WarehouseVectorEnv(num_envs, config=memory_env(**overrides).config)
    slow = reference(num_envs, **overrides)
    f_obs, _ = fast.reset(seed=5)
    s_obs, _ = slow.reset(seed=5)
    np.testing.assert_array_equal(f_obs, s_obs)
    share = np.linspace(0.2, 0.95, num_envs)  # mostly random in env 0, mostly oracle last
    ends = successes = 0
    for _ in range(600):
        random = rng.integers(0, 6, num_envs)
        policy = oracle_actions(fast) if rng.random() < 0.5 else guess_actions(fast)
        actions = np.where(rng.random(num_envs) < share, policy, random)
        f_term, f_trunc, f_info, s_info = step_alike(fast, slow, actions)
        done = f_term | f_trunc
        for i in np.flatnonzero(done):
            np.testing.assert_array_equal(f_info["final_obs"][i], s_info["final_obs"][i])
            assert f_info["is_success"][i] == s_info["final_info"]["is_success"][i]
            successes += f_info["is_success"][i]
        ends += done.sum()
    assert ends > 20 and 0 < successes < ends  # wrong deliveries and right ones both seen


@pytest.mark.parametrize("seed", range(6))
def test_oracle_return_is_the_optimum_in_single_and_vector_envs(seed):
    env = memory_env(orders_per_shift=2, max_steps=60)
    env.reset(seed=seed)
    expected = optimal_return(env)
    total, steps = WarehouseOracle().run_shift(env)
    assert total == pytest.approx(expected) and steps <= env.config.min_budget
    vec = WarehouseVectorEnv(1, config=env.config)
    vec.reset(seed=seed)
    vec_total, done = 0.0, False
    while not done:
        _, reward, terminated, truncated, info = vec.step(oracle_actions(vec))
        vec_total, done = vec_total + reward[0], terminated[0] or truncated[0]
    assert vec_total == pytest.approx(expected) and info["is_success"][0]


def test_memoryless_ceiling_is_reproducible_and_far_below_the_oracle():
    config = make_config("small", **MEMORY_VARIANT)
    first = measure_ceiling(config, episodes=1024, seed=1_000_000)
    assert first == measure_ceiling(config, episodes=1024, seed=1_000_000)
    w = config.rewards
    oracle = w.pick + w.deliver + 3 * w.step  # moves earn step + progress = 0
    assert first.oracle == pytest.approx(oracle)
    bound = (w.pick + w.deliver) / K + (K - 1) / K * (w.wrong_pick + w.wrong_drop) + 3 * w.step
    assert first.bound == pytest.approx(bound) == memoryless_bound(config)
    assert first.bound_fraction < 0.3  # 0.295: no policy without memory expects more
    error = first.guess_std / np.sqrt(first.episodes)
    assert first.bound - 4 * error < first.guess < first.bound + 4 * error


def test_memoryless_bound_refuses_settings_it_does_not_hold_for():
    with pytest.raises(ValueError, match="memory is off"):
        memoryless_bound(make_config("small"))
    with pytest.raises(ValueError, match="not full"):
        memoryless_bound(make_config("small", **{**MEMORY_VARIANT, "initial_stock_min": 2}))
    with pytest.raises(ValueError, match="wrong_pick"):
        memoryless_bound(make_config("small", **{**MEMORY_VARIANT, "rewards": {}}))


def test_memory_refuses_observations_that_would_show_the_order():
    for extra in ({"observation": "dict"}, {"action_mask": True}):
        with pytest.raises(ValueError, match="memory needs"):
            memory_env(**extra)


def test_check_env_and_sims_check_pass():
    env_id = sims.WAREHOUSE_MEMORY_ID
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(gymnasium.make(env_id).unwrapped)
    assert [str(w.message) for w in caught] == []
    results = run_checks(lambda: gymnasium.make(env_id), env_id, {}, steps=60)
    assert all(r.ok for r in results), [(r.name, r.reason) for r in results if not r.ok]
