"""LinearQuadratic-v0: continuous control whose optimum is known in closed form.

A double integrator (position and velocity of a unit mass, time step ``dt``) driven
by a bounded force ``u``: ``x' = A x + B u`` with ``A = [[1, dt], [0, 1]]`` and
``B = [[0], [dt]]``. Each step costs ``dt * (x'Qx + u'Ru)`` (reward = minus that);
an episode starts at a seeded position and velocity in ``[-1, 1]`` and is truncated
after ``horizon`` steps. There is no termination, so no policy can end its costs early.

The optimal controller of a finite-horizon linear-quadratic regulator is linear,
``u_t = -K_t x_t``, with gains from the backward Riccati recursion, and its cost from
``x_0`` is exactly ``x_0' P_0 x_0`` (:func:`riccati`). The force bound is chosen so
the optimal force stays inside it from every start (``lqr_force_bound`` checks it),
so the bounded problem has the same optimum. ``oracle_action()`` plays it, so the
evaluator's baseline is the true optimum.

>>> import gymnasium, sims
>>> env = gymnasium.make("LinearQuadratic-v0").unwrapped
>>> _ = env.reset(seed=0)
>>> round(env.optimal_return(), 6) == round(-float(env.state @ env.gains.cost[0] @ env.state), 6)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sims.versioning import simulator_version


@dataclass(frozen=True)
class Gains:
    """The finite-horizon LQR solution: gains K_t (H, m, n) and cost-to-go P_t (H+1, n, n)."""

    gain: np.ndarray
    cost: np.ndarray


def riccati(a, b, q, r, horizon: int) -> Gains:
    """Backward Riccati recursion with no terminal cost: ``P_H = 0``,
    ``K_t = (R + B'P B)^-1 B'P A``, ``P_t = Q + A'P (A - B K_t)`` (P = P_{t+1})."""
    n, m = b.shape
    cost = np.zeros((horizon + 1, n, n))
    gain = np.zeros((horizon, m, n))
    for t in reversed(range(horizon)):
        p = cost[t + 1]
        gain[t] = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        cost[t] = q + a.T @ p @ (a - b @ gain[t])
    return Gains(gain, cost)


class LinearQuadraticEnv(gym.Env):
    """A bounded-force double integrator with quadratic costs; see the module doc."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    reward_components: ClassVar[tuple[str, ...]] = ("state_cost", "control_cost")
    state_variables: ClassVar[dict[str, str]] = {"state": "episode", "steps": "episode"}

    def __init__(
        self,
        dt: float = 0.1,
        horizon: int = 100,
        state_weight: float = 1.0,
        control_weight: float = 0.1,
        max_force: float = 8.0,
    ) -> None:
        self.dt, self.horizon, self.max_force = dt, horizon, max_force
        self.a = np.array([[1.0, dt], [0.0, 1.0]])
        self.b = np.array([[0.0], [dt]])
        self.q = state_weight * np.eye(2)
        self.r = control_weight * np.eye(1)
        self.gains = riccati(self.a, self.b, self.q * dt, self.r * dt, horizon)
        config = {
            "dt": dt,
            "horizon": horizon,
            "state_weight": state_weight,
            "control_weight": control_weight,
            "max_force": max_force,
        }
        self.version = simulator_version("lqr", Path(__file__), config)
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-max_force, max_force, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-1.0, 1.0, size=2)
        self.steps = 0
        return self.state.astype(np.float32), {}

    def step(self, action):
        force = np.asarray(action, dtype=np.float64).reshape(1, 1)
        state, state_cost, control_cost = self.dynamics(self.state[None], force)
        self.state = state[0]
        parts = {"state_cost": float(state_cost[0]), "control_cost": float(control_cost[0])}
        self.steps += 1
        info = {"reward_components": parts}
        truncated = self.steps >= self.horizon
        return self.state.astype(np.float32), sum(parts.values()), False, truncated, info

    def dynamics(self, x: np.ndarray, force: np.ndarray):
        """One step of a batch (B, 2) under forces (B, 1), elementwise (so a batch and
        a single env give bit-identical results): next states and the two costs, as
        rewards (B,)."""
        u = np.clip(force[:, 0], -self.max_force, self.max_force)
        position, velocity = x[:, 0], x[:, 1]
        state_cost = -self.dt * self.q[0, 0] * (position * position + velocity * velocity)
        control_cost = -self.dt * self.r[0, 0] * (u * u)
        moved = np.stack([position + self.dt * velocity, velocity + self.dt * u], axis=1)
        return moved, state_cost, control_cost

    def oracle_action(self) -> np.ndarray:
        """The optimal force now: ``-K_t x`` (inside the bound from every start)."""
        return (-self.gains.gain[self.steps] @ self.state).astype(np.float32)

    def optimal_return(self) -> float:
        """The optimum from the state the env was just reset to: ``-x_0' P_0 x_0``."""
        return -float(self.state @ self.gains.cost[0] @ self.state)


class LinearQuadraticVectorEnv(VectorEnv):
    """``num_envs`` LinearQuadratic-v0 instances in NumPy, SAME_STEP autoreset.

    Env ``i``'s first episode starts as a single env reset with the ``i``-th seed
    does; each later episode with a seed drawn from that env's own generator, reported
    in ``info["reset_info"]["episode_seed"]`` (and in reset's info), so every episode
    can be re-created alone as ``reset(seed=episode_seed)`` (tested against the
    single env, bit for bit)."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}
    state_variables = LinearQuadraticEnv.state_variables
    reward_components = LinearQuadraticEnv.reward_components

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        self.single = LinearQuadraticEnv(**kwargs)
        self.num_envs, self.version = num_envs, self.single.version
        self.single_observation_space = self.single.observation_space
        self.single_action_space = self.single.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.state = np.zeros((num_envs, 2))
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self._seeders: list[np.random.Generator] = []

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, int | np.integer):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed) if seed is not None else [None] * self.num_envs
        self._seeders = [np.random.default_rng(s) for s in seeds]
        first = np.array([s if s is not None else self._draw(i) for i, s in enumerate(seeds)])
        self._start(np.arange(self.num_envs), first)
        return self.state.astype(np.float32), {"episode_seed": first.astype(np.int64)}

    def step(self, actions):
        force = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, 1)
        self.state, state_cost, control_cost = self.single.dynamics(self.state, force)
        self.steps += 1
        truncated = self.steps >= self.single.horizon
        terminated = np.zeros(self.num_envs, dtype=bool)
        parts = {"state_cost": state_cost, "control_cost": control_cost}
        info: dict[str, Any] = {"reward_components": parts}
        obs = self.state.astype(np.float32)
        if truncated.any():
            info["final_obs"] = np.where(truncated[:, None], obs, np.float32(0.0))
            info["_final_obs"] = truncated
            ended = np.flatnonzero(truncated)
            seeds = np.zeros(self.num_envs, dtype=np.int64)
            seeds[ended] = [self._draw(i) for i in ended]
            self._start(ended, seeds)
            obs = self.state.astype(np.float32)
            info["reset_info"] = {"episode_seed": seeds}
        return obs, state_cost + control_cost, terminated, truncated, info

    def _draw(self, index: int) -> int:
        return int(self._seeders[index].integers(2**62))

    def _start(self, envs: np.ndarray, seeds: np.ndarray) -> None:
        for i in envs:
            self.state[i] = seeding.np_random(int(seeds[i]))[0].uniform(-1.0, 1.0, size=2)
        self.steps[envs] = 0


def lqr_force_bound(env: LinearQuadraticEnv) -> float:
    """The largest optimal force over every start in [-1, 1]^2 and every step: the
    optimum is linear, so the largest is at a corner of the start square."""
    largest = 0.0
    for corner in ([1, 1], [1, -1], [-1, 1], [-1, -1]):
        x = np.array(corner, dtype=float)
        for t in range(env.horizon):
            u = -env.gains.gain[t] @ x
            largest = max(largest, float(np.abs(u).max()))
            x = env.a @ x + env.b @ u
    return largest
