"""Envs for tests/test_sims_check.py: one correct corridor and variants that each break
exactly one of ``sims.check``'s checks (and pass all the others).

Importing this module registers them with Gymnasium, so with tests/ on the path they
are ``check_envs:CheckCorridor-v0``, ``check_envs:CheckNondeterministic-v0``, ...
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LENGTH = 10  # cells 0 .. LENGTH - 1; the goal is the last one
MAX_STEPS = 50
STEP_COST = -0.01
GOAL_REWARD = 1.0


class _Corridor(gym.Env):
    """A 1-D corridor: move left, stay or right from a seeded start to the goal at the
    end. Declares reward components and state variables, but no version."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    reward_components: ClassVar[tuple[str, ...]] = ("step", "goal")
    state_variables: ClassVar[dict[str, str]] = {"position": "episode", "steps": "episode"}

    def __init__(self) -> None:
        self.action_space = self._action_space()
        high = np.array([LENGTH - 1, MAX_STEPS], dtype=np.float32)
        self.observation_space = spaces.Box(np.zeros(2, np.float32), high, dtype=np.float32)
        self.position, self.steps = 0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.position, self.steps = self._start(), 0
        return self._obs(), {}

    def step(self, action: Any):
        self.position = int(np.clip(self.position + self._delta(action), 0, LENGTH - 1))
        self.steps += 1
        at_goal = self.position == LENGTH - 1
        parts = {"step": STEP_COST, "goal": GOAL_REWARD if at_goal else 0.0}
        terminated, truncated = self._ends(at_goal)
        return self._obs(), self._reward(parts), terminated, truncated, {"reward_components": parts}

    # -- what the variants override ------------------------------------------------------
    def _action_space(self) -> spaces.Space:
        return spaces.Discrete(3)  # 0 left, 1 stay, 2 right

    def _delta(self, action: Any) -> int:
        return int(action) - 1

    def _start(self) -> int:
        return int(self.np_random.integers(0, LENGTH // 2))

    def _reward(self, parts: dict[str, float]) -> float:
        return parts["step"] + parts["goal"]

    def _ends(self, at_goal: bool) -> tuple[bool, bool]:
        return at_goal, not at_goal and self.steps >= MAX_STEPS

    def _obs(self) -> np.ndarray:
        return np.array([self.position, min(self.steps, MAX_STEPS)], dtype=np.float32)


class Corridor(_Corridor):
    """The correct env: passes every check."""

    version = "check-corridor-1"


class Nondeterministic(Corridor):
    """Breaks ``determinism``: from step 5 on, half the moves come from the global
    ``random`` module (check_env's single step still matches)."""

    def _delta(self, action: Any) -> int:
        if self.steps >= 5 and random.random() < 0.5:
            return random.choice((-1, 0, 1))
        return super()._delta(action)


class SameEveryEpisode(Corridor):
    """Breaks ``variety``: every seed starts at cell 0."""

    def _start(self) -> int:
        return 0


class UnboundedActions(Corridor):
    """Breaks ``bounded actions``: a continuous Box(-inf, inf) action, rounded to a move."""

    def _action_space(self) -> spaces.Space:
        return spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)

    def _delta(self, action: Any) -> int:
        return int(np.clip(np.rint(np.asarray(action, dtype=np.float64)[0]), -1, 1))


class NoVersion(_Corridor):
    """Breaks ``version``: no ``version``, and tests/ is no installed package."""


class BadComponentSum(Corridor):
    """Breaks ``reward components``: the reward is 0.5 more than its parts."""

    def _reward(self, parts: dict[str, float]) -> float:
        return super()._reward(parts) + 0.5


class UndeclaredPersistence(Corridor):
    """Breaks ``state variables``: a persistent variable, but no ``persistent_state``
    reset option and nothing reported in reset's info."""

    state_variables: ClassVar[dict[str, str]] = {"position": "episode", "visits": "persistent"}


class BadScope(Corridor):
    """Breaks ``state variables``: a scope that is neither "episode" nor "persistent"."""

    state_variables: ClassVar[dict[str, str]] = {"position": "forever"}


class Endless(Corridor):
    """Breaks ``episode budget``: no episode ever ends."""

    def _ends(self, at_goal: bool) -> tuple[bool, bool]:
        return False, False


class WrongDtype(Corridor):
    """Breaks ``check_env``: float64 observations in a float32 observation space."""

    def _obs(self) -> np.ndarray:
        return super()._obs().astype(np.float64)


ENVS: dict[str, type[gym.Env]] = {
    "CheckCorridor-v0": Corridor,
    "CheckNondeterministic-v0": Nondeterministic,
    "CheckSameEveryEpisode-v0": SameEveryEpisode,
    "CheckUnboundedActions-v0": UnboundedActions,
    "CheckNoVersion-v0": NoVersion,
    "CheckBadComponentSum-v0": BadComponentSum,
    "CheckUndeclaredPersistence-v0": UndeclaredPersistence,
    "CheckBadScope-v0": BadScope,
    "CheckEndless-v0": Endless,
    "CheckWrongDtype-v0": WrongDtype,
}

for _id, _cls in ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=f"{__name__}:{_cls.__name__}")
