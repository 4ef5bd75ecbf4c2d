"""LinearQuadratic-v0: its oracle is the Riccati optimum, its batched env equals the
single env bit for bit, and it passes sims.check."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from sims.check import run_checks
from sims.lqr import LinearQuadraticEnv, LinearQuadraticVectorEnv, lqr_force_bound, riccati


def play(env: LinearQuadraticEnv, seed: int, policy) -> float:
    env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(policy(env))
        total, done = total + reward, terminated or truncated
    return total


def test_the_oracle_earns_exactly_the_riccati_optimum():
    env = LinearQuadraticEnv()
    assert lqr_force_bound(env) < env.max_force  # the bound never binds the optimum
    for seed in range(10):
        env.reset(seed=seed)
        optimum = env.optimal_return()
        assert play(env, seed, lambda e: e.oracle_action()) == pytest.approx(optimum, rel=1e-9)


@pytest.mark.parametrize("scale", [0.8, 1.2])
def test_perturbed_gains_do_worse(scale):
    env = LinearQuadraticEnv()
    for seed in range(5):
        best = play(env, seed, lambda e: e.oracle_action())
        assert play(env, seed, lambda e: scale * e.oracle_action()) < best


def test_riccati_matches_brute_force_on_a_one_step_problem():
    a, b, q, r = np.eye(1) * 0.9, np.eye(1) * 0.5, np.eye(1), np.eye(1) * 0.2
    gains = riccati(a, b, q, r, horizon=2)
    x0 = np.array([1.0])
    forces = np.linspace(-3, 3, 60001)
    # two steps: cost x0'qx0 + u0'ru0 + x1'qx1 + u1'ru1, with u1 optimal = 0 (no terminal cost)
    x1 = a[0, 0] * x0[0] + b[0, 0] * forces
    costs = q[0, 0] * x0[0] ** 2 + r[0, 0] * forces**2 + q[0, 0] * x1**2
    assert float(x0 @ gains.cost[0] @ x0) == pytest.approx(costs.min(), abs=1e-6)


def test_the_batched_env_equals_single_envs_bit_for_bit():
    vec = LinearQuadraticVectorEnv(4, horizon=7)
    singles = [LinearQuadraticEnv(horizon=7) for _ in range(4)]
    obs, info = vec.reset(seed=[11, 12, 13, 14])
    current = [s.reset(seed=int(e))[0] for s, e in zip(singles, info["episode_seed"], strict=True)]
    rng = np.random.default_rng(0)
    for _ in range(30):
        np.testing.assert_array_equal(obs, np.stack(current))
        actions = rng.uniform(-10, 10, (4, 1)).astype(np.float32)
        obs, reward, terminated, truncated, info = vec.step(actions)
        for i, single in enumerate(singles):
            o, r, te, tr, _ = single.step(actions[i])
            assert (r, te, tr) == (reward[i], terminated[i], truncated[i])
            if tr:
                np.testing.assert_array_equal(info["final_obs"][i], o)
                o = single.reset(seed=int(info["reset_info"]["episode_seed"][i]))[0]
            current[i] = o


def test_it_passes_sims_check():
    results = run_checks(lambda: gymnasium.make("LinearQuadratic-v0"), "LinearQuadratic-v0")
    assert all(r.ok for r in results), [r.row() for r in results if not r.ok]
