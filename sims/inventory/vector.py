"""InventoryVectorEnv: many Inventory-v0 warehouses stepped at once with NumPy.

Gives exactly the transitions of :class:`sims.inventory.env.InventoryEnv` run in a
``SyncVectorEnv`` with ``autoreset_mode=SAME_STEP``: env ``i`` reset with seed
``seed + i`` (or ``seed[i]``), each with its own generator. Worlds and episodes are
drawn per env by the shared :mod:`sims.inventory.demand`; the steps are batched.

Autoreset mode ``SAME_STEP``: on the step where env ``i`` ends, ``obs[i]`` is the first
observation of its next episode (stock and orders in transit carried over), the last
one of the ended episode is in ``info["final_obs"][i]`` (valid where
``info["_final_obs"]``), and ``info["reset_info"]`` holds what ``reset()`` reports
(the persistent state and the demand seed) for the envs that started anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sims.inventory import demand, dynamics
from sims.inventory.config import InventoryConfig, make_config
from sims.inventory.demand import PERSISTENT, EpisodeDraw, World
from sims.inventory.env import (
    PACKAGE_DIR,
    REWARD_COMPONENTS,
    STATE_VARIABLES,
    action_space,
    observation_space,
)
from sims.seeds import per_env_seeds
from sims.versioning import simulator_version


class InventoryVectorEnv(VectorEnv):
    """``num_envs`` warehouses in NumPy arrays with a leading batch dimension."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    state_variables = STATE_VARIABLES
    reward_components = REWARD_COMPONENTS
    reset_options = frozenset({"reset_persistent"})  # replay options are single-env only

    def __init__(
        self,
        num_envs: int,
        regime: str = "train",
        demand: dict[str, Any] | None = None,
        costs: dict[str, float] | None = None,
        config: InventoryConfig | None = None,
        **overrides: Any,
    ) -> None:
        self.config = cfg = config or make_config(regime, demand, costs, **overrides)
        self.num_envs = num_envs
        self.version = simulator_version("inventory", PACKAGE_DIR, cfg.to_dict())
        self.single_observation_space = observation_space(cfg)
        self.single_action_space = action_space(cfg)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        b, k, lead, h = num_envs, cfg.n_items, cfg.lead_time, cfg.horizon
        self._rngs: list[np.random.Generator | None] = [None] * b
        self.worlds: list[World | None] = [None] * b
        self.draws: list[EpisodeDraw | None] = [None] * b
        self.stock = np.zeros((b, k), dtype=np.int64)
        self.pipeline = np.zeros((b, k, lead), dtype=np.int64)
        self.demand = np.zeros((b, h, k), dtype=np.int64)
        self.forecast = np.zeros((b, h + 1, k, lead + 1))
        self.demand_seeds = np.zeros(b, dtype=np.int64)
        self.steps = np.zeros(b, dtype=np.int64)
        self._started = False

    # -- Gymnasium API -------------------------------------------------------------
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        options = options or {}
        unknown = set(options) - self.reset_options
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}")
        for i, env_seed in enumerate(per_env_seeds(seed, self.num_envs)):
            if env_seed is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(env_seed)[0]
                self.worlds[i] = None  # a seed starts a new world
        if options.get("reset_persistent", False):
            self.worlds = [None] * self.num_envs
        self._start(np.arange(self.num_envs))
        self._started = True
        return self._observations(), self.reset_info()

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        cfg, b = self.config, self.num_envs
        orders = np.asarray(actions)
        if orders.dtype.kind not in "iu" or not self.action_space.contains(orders):
            raise ValueError(f"actions must be ({b}, {cfg.n_items}) ints in [0, {cfg.max_order}]")
        today = self.demand[np.arange(b), self.steps]
        out = dynamics.step(cfg, self.stock, self.pipeline, orders, today)
        self.stock, self.pipeline = out.stock, out.pipeline
        self.steps += 1
        truncated = self.steps >= cfg.horizon
        terminated = np.zeros(b, dtype=bool)
        info: dict[str, Any] = {"reward_components": out.parts, "sold": out.sold, "lost": out.lost}
        obs = self._observations()
        if truncated.any():
            info["final_obs"] = np.where(truncated[:, None], obs, np.float32(0.0))
            info["_final_obs"] = truncated.copy()
            ended = np.flatnonzero(truncated)
            self._start(ended)
            obs[ended] = self._observations()[ended]
            info["reset_info"] = self.reset_info()
        return obs, out.reward, terminated, truncated, info

    # -- state ----------------------------------------------------------------------
    def reset_info(self) -> dict[str, np.ndarray]:
        """What ``reset()`` reports, for every env's current episode: the persistent
        state it started from and its demand seed."""
        rows = [w.to_json() for w in self.worlds]
        info = {name: np.array([row[name] for row in rows]) for name in PERSISTENT}
        return {**info, "demand_seed": self.demand_seeds.copy()}

    def persistent_state(self, index: int) -> dict[str, Any]:
        """Env ``index``'s world as it stands now (what its next episode carries over)."""
        return self._carried(index).to_json()

    def _carried(self, i: int) -> World:
        return demand.next_world(
            self.worlds[i], self.draws[i], self.stock[i], self.pipeline[i], int(self.steps[i])
        )

    def _start(self, envs: np.ndarray) -> None:
        """New episodes for ``envs``: worlds carried over (or drawn), demand drawn."""
        cfg = self.config
        for i in envs:
            rng = self._rngs[i]
            fresh = self.worlds[i] is None
            self.worlds[i] = world = demand.draw_world(cfg, rng) if fresh else self._carried(i)
            self.demand_seeds[i] = demand.episode_seed(rng)
            self.draws[i] = draw = demand.draw_episode(cfg, world, int(self.demand_seeds[i]))
            self.stock[i], self.pipeline[i] = world.stock, world.pipeline
            self.demand[i], self.forecast[i] = draw.demand, draw.forecast
        self.steps[envs] = 0

    def _observations(self) -> np.ndarray:
        forecast = self.forecast[np.arange(self.num_envs), self.steps]
        return dynamics.observe(self.config, self.stock, self.pipeline, forecast)
