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
        u = np.clip(
            np.asarray(action, dtype=np.float64).reshape(1), -self.max_force, self.max_force
        )
        x = self.state
        parts = {
            "state_cost": -float(self.dt * x @ self.q @ x),
            "control_cost": -float(self.dt * u @ self.r @ u),
        }
        self.state = self.a @ x + self.b @ u
        self.steps += 1
        info = {"reward_components": parts}
        truncated = self.steps >= self.horizon
        return self.state.astype(np.float32), sum(parts.values()), False, truncated, info

    def oracle_action(self) -> np.ndarray:
        """The optimal force now: ``-K_t x`` (inside the bound from every start)."""
        return (-self.gains.gain[self.steps] @ self.state).astype(np.float32)

    def optimal_return(self) -> float:
        """The optimum from the state the env was just reset to: ``-x_0' P_0 x_0``."""
        return -float(self.state @ self.gains.cost[0] @ self.state)


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
