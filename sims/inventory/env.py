"""Inventory-v0: order stock for a few items whose demand drifts over a run.

The reference single env. :mod:`sims.inventory.vector` is its batched twin; both
call :mod:`sims.inventory.demand` and :mod:`sims.inventory.dynamics`, and a test
checks that they give identical transitions for equal seeds and actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sims.declarations import StateScope
from sims.inventory import demand, dynamics
from sims.inventory.config import InventoryConfig, make_config
from sims.inventory.demand import EpisodeDraw, World
from sims.inventory.dynamics import REWARD_COMPONENTS
from sims.versioning import simulator_version

# Stock, orders in transit and the demand regime carry over from one episode to the
# next. A seed starts a new world: reset(seed=s) draws them afresh from s, so it is
# reproducible whatever came before; reset(options={"reset_persistent": True}) redraws
# them from the generator without reseeding; reset(options={"persistent_state": ...})
# sets them (replay uses it, with the reported demand_seed).
STATE_VARIABLES: dict[str, StateScope] = {
    "stock": "persistent",  # units on hand per item
    "pipeline": "persistent",  # orders in transit per item, by steps to arrival
    "level": "persistent",  # demand level per item (drifts)
    "amplitude": "persistent",  # seasonal amplitude per item (drifts)
    "phase": "persistent",  # seasonal phase per item (fixed per world)
    "clock": "persistent",  # steps since the world began: where the season is
    "demand": "episode",  # the episode's demand path, drawn from its demand_seed
    "step": "episode",  # steps taken this episode
}

RESET_OPTIONS = frozenset({"reset_persistent", "persistent_state", "demand_seed"})

PACKAGE_DIR = Path(__file__).parent


def action_space(config: InventoryConfig) -> spaces.MultiDiscrete:
    """Order 0 .. max_order units of each item."""
    return spaces.MultiDiscrete(np.full(config.n_items, config.max_order + 1, dtype=np.int64))


def observation_space(config: InventoryConfig) -> spaces.Box:
    return spaces.Box(0.0, 1.0, (config.observation_size,), np.float32)


class InventoryEnv(gym.Env[np.ndarray, np.ndarray]):
    """One warehouse: each step, order a bounded quantity of every item.

    Example:
        >>> import gymnasium, sims
        >>> env = gymnasium.make("Inventory-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, info["stock"], info["clock"]
        ((12,), [17, 13], 0)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    state_variables: ClassVar[Mapping[str, StateScope]] = STATE_VARIABLES
    reward_components: ClassVar[tuple[str, ...]] = REWARD_COMPONENTS
    reset_options: ClassVar[frozenset[str]] = RESET_OPTIONS

    def __init__(
        self,
        regime: str = "train",
        demand: Mapping[str, Any] | None = None,
        costs: Mapping[str, float] | None = None,
        config: InventoryConfig | None = None,
        **overrides: Any,
    ) -> None:
        self.config = config or make_config(regime, demand, costs, **overrides)
        self.version = simulator_version("inventory", PACKAGE_DIR, self.config.to_dict())
        self.observation_space = observation_space(self.config)
        self.action_space = action_space(self.config)
        if self.config.exact:  # declared only where the optimum is known exactly
            self.oracle_action = self._optimal_action
        self.world: World | None = None
        self._draw: EpisodeDraw | None = None
        self.steps = 0

    # -- Gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - RESET_OPTIONS
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}")
        self.world = self._settle_world(options, fresh=seed is not None)
        self.demand_seed = demand.episode_seed(self.np_random, options)
        self._draw = demand.draw_episode(self.config, self.world, self.demand_seed)
        self.stock, self.pipeline = self.world.stock.copy(), self.world.pipeline.copy()
        self.steps = 0
        return self._observation(), {**self.world.to_json(), "demand_seed": self.demand_seed}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._draw is None:
            raise RuntimeError("call reset() before step()")
        orders = np.asarray(action)
        if orders.dtype.kind not in "iu" or not self.action_space.contains(orders):
            raise ValueError(
                f"action must be {self.config.n_items} ints in [0, {self.config.max_order}], "
                f"got {action!r}"
            )
        out = dynamics.step(
            self.config,
            self.stock[None],
            self.pipeline[None],
            orders[None],
            self._draw.demand[self.steps][None],
        )
        self.stock, self.pipeline = out.stock[0], out.pipeline[0]
        self.steps += 1
        parts = {name: float(v[0]) for name, v in out.parts.items()}
        info = {"reward_components": parts, "sold": out.sold[0], "lost": out.lost[0]}
        truncated = self.steps >= self.config.horizon
        return self._observation(), float(out.reward[0]), False, truncated, info

    # -- state exposed to baselines and tests -----------------------------------------
    def persistent_state(self) -> dict[str, Any]:
        """The world as it stands now: what the next unseeded reset carries over."""
        if self.world is None:
            return {}
        return demand.next_world(
            self.world, self._draw, self.stock, self.pipeline, self.steps
        ).to_json()

    def _optimal_action(self) -> np.ndarray:
        """The exactly optimal order now (single item, constant demand): a lookup in
        the dynamic-programming solution of :mod:`sims.inventory.optimal`."""
        from sims.inventory.optimal import solve

        solution = solve(self.config, float(self.world.level[0]))
        return np.array([solution.order(self.steps, int(self.stock[0]), self.pipeline[0])])

    # -- internals --------------------------------------------------------------------
    def _settle_world(self, options: Mapping[str, Any], fresh: bool) -> World:
        if "persistent_state" in options:
            return demand.world_from_json(self.config, options["persistent_state"])
        if fresh or self.world is None or options.get("reset_persistent", False):
            return demand.draw_world(self.config, self.np_random)
        # carry over: stock and orders in transit as they stand, the regime moved on
        return demand.next_world(self.world, self._draw, self.stock, self.pipeline, self.steps)

    def _observation(self) -> np.ndarray:
        return dynamics.observe(
            self.config,
            self.stock[None],
            self.pipeline[None],
            self._draw.forecast[self.steps][None],
        )[0]
