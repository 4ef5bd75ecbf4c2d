"""Warehouse-v0: Gymnasium conformance, determinism, persistence, oracle optimality."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sims
from sims.warehouse import (
    SIZES,
    STATE_VARIABLES,
    WarehouseEnv,
    WarehouseOracle,
    make_config,
    optimal_return,
)
from sims.warehouse.layout import DROP, MOVES, PICK, bfs_distances
from sims.warehouse.vector import batched_bfs

SEEDS = range(40)


def rollout(env: WarehouseEnv, seed: int, actions: list[int], episodes: int = 3) -> list:
    """Record everything observable over several shifts (persistent state included)."""
    record = []
    obs, info = env.reset(seed=seed)
    record.append((obs, info["inventory"].tolist()))
    steps = iter(actions)
    for _ in range(episodes):
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(next(steps))
            record.append((obs, reward, terminated, truncated, info, env.persistent_state()))
            done = terminated or truncated
        obs, info = env.reset()
        record.append((obs, info["inventory"].tolist()))
    return record


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert gymnasium.utils.env_checker.data_equivalence(x, y, exact=True)


def test_registered_env_passes_check_env_without_warnings():
    env = gymnasium.make(sims.WAREHOUSE_ID)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_size_passes_check_env(size):
    check_env(WarehouseEnv(size=size), skip_render_check=True)


def test_same_seed_and_actions_give_identical_rollouts():
    actions = np.random.default_rng(1).integers(0, 6, size=1000).tolist()
    first = rollout(WarehouseEnv(), seed=7, actions=actions)
    second = rollout(WarehouseEnv(), seed=7, actions=actions)
    assert_same(first, second)


def test_reset_with_a_seed_is_reproducible_whatever_came_before():
    env = WarehouseEnv()
    first, _ = env.reset(seed=3)
    for _ in range(30):
        env.step(env.action_space.sample())
    env.reset()
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(first, again)


def test_different_seeds_draw_different_layouts_and_order_streams():
    env = WarehouseEnv()
    layouts, orders = set(), set()
    for seed in SEEDS:
        env.reset(seed=seed)
        shift = env.shift
        layouts.add((shift.obstacles.tobytes(), shift.dropoff, shift.shelves.tobytes()))
        orders.add(tuple(shift.orders.tolist()))
    assert len(layouts) == len(SEEDS)
    assert len(orders) > 5


@pytest.mark.parametrize("size", sorted(SIZES))
def test_oracle_completes_every_shift_with_the_optimal_return(size):
    env, oracle = WarehouseEnv(size=size), WarehouseOracle()
    for seed in SEEDS:
        env.reset(seed=seed)
        best = optimal_return(env)
        total, steps = oracle.run_shift(env)
        assert env.order_index == env.config.orders_per_shift, f"seed {seed} not completed"
        assert total == pytest.approx(best, abs=1e-9)
        assert steps < env.config.max_steps


def test_oracle_optimum_matches_the_reward_decomposition():
    """With default weights every shortest-path move nets zero, so the optimum is
    (pick + deliver + 2 * step) per order, whatever the layout."""
    env, w = WarehouseEnv(), make_config().rewards
    n = env.config.orders_per_shift
    for seed in SEEDS:
        env.reset(seed=seed)
        assert optimal_return(env) == pytest.approx(n * (w.pick + w.deliver + 2 * w.step))


def test_no_perturbed_oracle_beats_the_oracle():
    env, oracle, rng = WarehouseEnv(), WarehouseOracle(), np.random.default_rng(0)
    for seed in SEEDS:
        env.reset(seed=seed)
        best = optimal_return(env)
        total, done = 0.0, False
        while not done:
            action = oracle.act(env) if rng.random() > 0.2 else int(rng.integers(6))
            _, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        assert total <= best + 1e-9


def test_random_policy_scores_far_below_the_oracle():
    env = WarehouseEnv()
    env.action_space.seed(0)
    returns, optimum = [], []
    for seed in SEEDS:
        env.reset(seed=seed)
        optimum.append(optimal_return(env))
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += reward
            done = terminated or truncated
        returns.append(total)
    assert np.mean(returns) < 0.2 * np.mean(optimum)


def test_reward_components_sum_to_the_reward_and_are_reported_every_step():
    env = WarehouseEnv()
    env.reset(seed=0)
    seen = set()
    oracle = WarehouseOracle()
    for t in range(200):
        action = oracle.act(env) if t % 3 else int(env.action_space.sample())
        _, reward, terminated, truncated, info = env.step(action)
        parts = info["reward_components"]
        assert set(parts) == {"step", "progress", "pick", "deliver", "penalty"}
        assert reward == pytest.approx(sum(parts.values()))
        seen |= {name for name, value in parts.items() if value}
        if terminated or truncated:
            env.reset()
    assert seen >= {"step", "progress", "pick", "deliver"}


def walk_to(env: WarehouseEnv, cell: tuple[int, int]) -> None:
    """Walk a shortest path to ``cell`` (a shelf or the drop-off)."""
    dist = env.distance_map(cell)
    while env.robot != tuple(cell):
        here = dist[env.robot]
        for action, (dr, dc) in MOVES.items():
            r, c = env.robot[0] + dr, env.robot[1] + dc
            if 0 <= r < dist.shape[0] and 0 <= c < dist.shape[1] and dist[r, c] == here - 1:
                env.step(action)
                break


def test_wrong_pick_and_wrong_drop_are_penalized_and_no_ops_are_not():
    env = WarehouseEnv()
    env.reset(seed=0)
    penalty = lambda action: env.step(action)[4]["reward_components"]["penalty"]  # noqa: E731
    assert penalty(DROP) == 0.0  # empty hands: a no-op
    wrong = next(k for k in range(env.config.n_items) if k != env.current_item)
    walk_to(env, tuple(env.shift.shelves[wrong]))
    stock = env.inventory[wrong]
    assert penalty(PICK) == env.config.rewards.wrong_pick
    assert env.carrying == wrong + 1 and env.inventory[wrong] == stock - 1
    assert penalty(PICK) == 0.0  # hands full: a no-op
    walk_to(env, env.shift.dropoff)
    assert penalty(DROP) == env.config.rewards.wrong_drop  # not the ordered item
    walk_to(env, tuple(env.shift.shelves[wrong]))
    assert penalty(DROP) == 0.0  # put back where it belongs
    assert env.carrying == 0 and env.inventory[wrong] == stock


def test_milestone_is_paid_once_per_order():
    """Picking, returning and re-picking the ordered item must not farm the milestone."""
    env, oracle = WarehouseEnv(), WarehouseOracle()
    env.reset(seed=0)
    while env.robot != tuple(env.shift.shelves[env.current_item]):
        env.step(oracle.act(env))
    paid = []
    for action in (4, 5, 4, 5, 4):  # pick, put back, pick, put back, pick
        _, _, _, _, info = env.step(action)
        paid.append(info["reward_components"]["pick"])
    assert paid == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_inventory_is_declared_persistent_and_carries_across_resets():
    assert STATE_VARIABLES["inventory"] == "persistent"
    assert {k for k, v in STATE_VARIABLES.items() if v == "persistent"} == {"inventory"}
    env, oracle = WarehouseEnv(), WarehouseOracle()
    env.reset(seed=11)
    start = env.inventory.copy()
    oracle.run_shift(env)
    delivered = np.bincount(env.shift.orders, minlength=env.config.n_items)
    np.testing.assert_array_equal(env.inventory, start - delivered)
    _, info = env.reset()
    expected = np.minimum(start - delivered + 1, env.config.stock_capacity)
    np.testing.assert_array_equal(info["inventory"], expected)


def test_inventory_drifts_over_a_long_run_and_shows_in_observations():
    env, oracle = WarehouseEnv(), WarehouseOracle()
    obs, _ = env.reset(seed=5)
    k = env.config.n_items
    start = 2 + 2 + 1 + 2 + 2 * k + 2 * (k + 1) + 1  # see sims/warehouse/observation.py
    inventory_slice = slice(start, start + k)
    seen = {tuple(obs[inventory_slice])}
    for _ in range(30):
        oracle.run_shift(env)
        obs, _ = env.reset()
        np.testing.assert_allclose(obs[inventory_slice], env.inventory / 6.0, rtol=1e-6)
        seen.add(tuple(obs[inventory_slice]))
    assert len(seen) > 3


def test_reset_persistent_redraws_the_inventory():
    env, oracle = WarehouseEnv(), WarehouseOracle()
    env.reset(seed=2)
    fresh = env.inventory.copy()
    for _ in range(20):
        oracle.run_shift(env)
        env.reset()
        if not np.array_equal(env.inventory, fresh):
            break
    assert not np.array_equal(env.inventory, fresh)
    env.reset(seed=2, options={"reset_persistent": True})
    np.testing.assert_array_equal(env.inventory, fresh)
    env.reset(options={"reset_persistent": True})  # no reseed: a new draw within bounds
    assert (env.inventory >= env.config.initial_stock_min).all()


def test_persistent_state_can_be_restored_for_replay():
    env = WarehouseEnv()
    env.reset(seed=4, options={"persistent_state": {"inventory": [1, 1, 1]}})
    assert env.inventory.tolist() == [1, 1, 1]
    assert sorted(env.shift.orders.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="inventory"):
        env.reset(options={"persistent_state": {"inventory": [1, 1]}})
    with pytest.raises(ValueError, match="inventory"):
        env.reset(options={"persistent_state": {"inventory": [50, 1, 1]}})  # over capacity
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"reset_persistant": True})


def test_version_follows_the_config_and_is_stable():
    a, b = WarehouseEnv(), WarehouseEnv()
    c = WarehouseEnv(rewards={"deliver": 5.0})
    assert a.version == b.version
    assert a.version != c.version
    assert a.version.startswith("warehouse+")


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match="max_stepz"):
        make_config(max_stepz=10)
    with pytest.raises(ValueError, match="delivr"):
        make_config(rewards={"delivr": 1.0})
    with pytest.raises(ValueError, match="max_steps"):
        make_config(max_steps=5)
    with pytest.raises(ValueError, match="size"):
        make_config("huge")


def test_step_rejects_out_of_range_actions():
    env = WarehouseEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(6)


def test_batched_bfs_matches_plain_bfs_on_random_grids():
    rng = np.random.default_rng(0)
    grids = rng.random((20, 7, 9)) < 0.3
    sources = np.stack([np.argwhere(~g)[:3] for g in grids])
    fast = batched_bfs(grids, sources)
    for e, grid in enumerate(grids):
        for s, (r, c) in enumerate(sources[e]):
            np.testing.assert_array_equal(fast[e, s], bfs_distances(grid, (int(r), int(c))))


def test_reset_info_re_creates_an_episode_exactly():
    """reset()'s info (inventory, shift seed) is all replay needs to re-simulate."""
    env, oracle, rng = WarehouseEnv(), WarehouseOracle(), np.random.default_rng(3)
    env.reset(seed=8)
    for _ in range(3):  # move the world on: the episode below starts mid-run
        oracle.run_shift(env)
        env.reset()
    obs, info = env.reset()
    actions = rng.integers(0, 6, 40).tolist()
    original = [obs] + [env.step(a)[:4] for a in actions]
    replayer = WarehouseEnv()
    options = {
        "persistent_state": {"inventory": info["inventory"]},
        "shift_seed": info["shift_seed"],
    }
    obs, _ = replayer.reset(options=options)
    replayed = [obs] + [replayer.step(a)[:4] for a in actions]
    assert_same(original, replayed)


def test_a_hackable_milestone_pays_every_right_pick():
    env, oracle = WarehouseEnv(milestone_once_per_order=False), WarehouseOracle()
    env.reset(seed=0)
    while env.robot != tuple(env.shift.shelves[env.current_item]):
        env.step(oracle.act(env))
    paid = [env.step(a)[4]["reward_components"]["pick"] for a in (PICK, DROP, PICK)]
    assert paid == [1.0, 0.0, 1.0]
