"""Test-local envs (outside the package) for the action and observation spaces that
turnwise's own envs do not cover: ``Tuple`` observations and ``MultiDiscrete`` actions
with a mask. Importing this module registers them."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ReorderEnv(gym.Env):
    """Each turn, order a quantity (0..3) of each of two items to match a seeded demand
    the agent sees; an order of more than the shelf space left is masked."""

    version = "reorder-1"
    reward_components: ClassVar[tuple[str, ...]] = ("shortfall", "excess")

    def __init__(self, horizon: int = 20) -> None:
        self.horizon = horizon
        self.observation_space = spaces.Tuple(
            [spaces.Discrete(4), spaces.Box(0.0, 1.0, (2,), np.float32)]
        )
        self.action_space = spaces.MultiDiscrete([4, 4])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self._obs(), {"action_mask": self._mask()}

    def step(self, action):
        action = np.asarray(action, dtype=np.int64)
        gap = self.demand - action
        parts = {
            "shortfall": -float(np.clip(gap, 0, None).sum()),
            "excess": -0.5 * float(np.clip(-gap, 0, None).sum()),
        }
        self.t += 1
        self._draw()
        info = {"reward_components": parts, "action_mask": self._mask()}
        truncated = self.t >= self.horizon
        return self._obs(), sum(parts.values()), False, truncated, info

    def _draw(self) -> None:
        self.demand = self.np_random.integers(0, 4, size=2)
        self.space_left = int(self.np_random.integers(1, 4))

    def _mask(self) -> np.ndarray:
        allowed = np.arange(4) <= self.space_left
        return np.concatenate([allowed, allowed])

    def _obs(self):
        return (self.space_left, (self.demand / 3.0).astype(np.float32))


if "Reorder-v0" not in gym.registry:
    gym.register(id="Reorder-v0", entry_point=ReorderEnv)
