"""WarehouseVectorEnv: many Warehouse-v0 instances stepped at once with NumPy.

Gives exactly the transitions of :class:`sims.warehouse.env.WarehouseEnv` run in a
``SyncVectorEnv`` with ``autoreset_mode=SAME_STEP``: env ``i`` reset with seed
``seed + i``, each with its own random generator, the same layout draws. Only the
per-step dynamics are vectorized; shifts are drawn by the shared
:func:`sims.warehouse.layout.draw_shift` when an env resets.

Autoreset mode: ``SAME_STEP``. When env ``i`` ends on a step, that step returns the
first observation of its next shift; the last observation of the ended shift is in
``info["final_obs"][i]`` (a float32 array, valid where ``info["_final_obs"]``), and
``info["reset_info"]`` holds what ``reset()`` reports (inventory, shift seed) for
the new shifts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sims.seeds import per_env_seeds
from sims.versioning import simulator_version
from sims.warehouse import layout, masks, observation
from sims.warehouse.config import WarehouseConfig, make_config
from sims.warehouse.env import (
    MEMORY_STATE_VARIABLES,
    PACKAGE_DIR,
    REWARD_COMPONENTS,
    STATE_VARIABLES,
)
from sims.warehouse.layout import DROP, MOVES, PICK, UNREACHABLE

# (d_row, d_col) per action id; pick and drop do not move.
_DELTAS = np.array([MOVES.get(a, (0, 0)) for a in range(6)], dtype=np.int64)


class WarehouseVectorEnv(VectorEnv):
    """``num_envs`` warehouses in NumPy arrays with a leading batch dimension."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    state_variables = STATE_VARIABLES
    reward_components = REWARD_COMPONENTS
    reset_options = frozenset({"reset_persistent"})  # replay options are single-env only

    def __init__(
        self,
        num_envs: int,
        size: str = "small",
        rewards: dict[str, float] | None = None,
        config: WarehouseConfig | None = None,
        **overrides: Any,
    ) -> None:
        self.config = cfg = config or make_config(size, rewards, **overrides)
        self.num_envs = num_envs
        self.version = simulator_version("warehouse", PACKAGE_DIR, cfg.to_dict())
        if cfg.memory:
            self.state_variables = MEMORY_STATE_VARIABLES
        self.single_observation_space = observation.observation_space(cfg)
        self.single_action_space = spaces.Discrete(6)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        b, k, n = num_envs, cfg.n_items, cfg.orders_per_shift
        h, w, r = cfg.height, cfg.width, cfg.view_radius
        self._rngs: list[np.random.Generator | None] = [None] * b
        self.inventory = np.full((b, k), -1, dtype=np.int64)  # -1: not drawn yet
        self.obstacles = np.zeros((b, h, w), dtype=bool)
        self._padded = np.zeros((b, h + 2 * r, w + 2 * r), dtype=bool)
        self.dropoff = np.zeros((b, 2), dtype=np.int64)
        self.shelves = np.zeros((b, k, 2), dtype=np.int64)
        self.orders = np.zeros((b, n), dtype=np.int64)
        self.shift_seeds = np.zeros(b, dtype=np.int64)
        self.distances = np.zeros((b, k + 1, h, w), dtype=np.int64)  # shelves..., drop-off
        self.robot = np.zeros((b, 2), dtype=np.int64)
        self.carrying = np.zeros(b, dtype=np.int64)
        self.order_index = np.zeros(b, dtype=np.int64)
        self.pick_paid = np.zeros(b, dtype=bool)
        self.steps = np.zeros(b, dtype=np.int64)
        self.briefing = np.zeros(b, dtype=bool)  # memory: the order is being issued
        self.delivered = np.zeros(b, dtype=np.int64)  # orders delivered right
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
        seeds = per_env_seeds(seed, self.num_envs)
        for i, env_seed in enumerate(seeds):
            if env_seed is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(env_seed)
                self.inventory[i] = -1  # a seed starts a new world
        everyone = np.arange(self.num_envs)
        if options.get("reset_persistent", False):
            self.inventory[:] = -1
        self._start_shifts(everyone, put_back=self._started)
        self._started = True
        info = {"inventory": self.inventory.copy(), "shift_seed": self.shift_seeds.copy()}
        if self.config.action_mask:
            info["action_mask"] = self.action_masks()
        return observation.present(self.config, self._observations()), info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != (self.num_envs,) or ((actions < 0) | (actions > 5)).any():
            raise ValueError(f"actions must be {self.num_envs} ints in [0, 6)")
        parts = self._apply(actions)
        self.steps += 1
        reward = parts["step"] + parts["progress"] + parts["pick"] + parts["deliver"]
        reward = reward + parts["penalty"]
        terminated = self.order_index == self.config.orders_per_shift
        truncated = ~terminated & (self.steps >= self.config.max_steps)
        info: dict[str, Any] = {
            "reward_components": parts,
            "orders_delivered": self.delivered.copy(),
            "is_success": self.delivered == self.config.orders_per_shift,
        }
        obs = self._observations()
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            final = np.where((terminated | truncated)[:, None], obs, np.float32(0.0))
            info["final_obs"] = observation.present(self.config, final)
            info["_final_obs"] = terminated | truncated
            self._start_shifts(done, put_back=True)
            obs[done] = self._observations(done)
            # What reset() would have reported for the envs that started a new shift.
            info["reset_info"] = {
                "inventory": self.inventory.copy(),
                "shift_seed": self.shift_seeds.copy(),
            }
        if self.config.action_mask:  # for the observations returned (new shifts included)
            info["action_mask"] = self.action_masks()
        return observation.present(self.config, obs), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """(B, 6) bool: the actions that do something in each warehouse (masks.py)."""
        b, shelf = np.arange(self.num_envs), self._shelf_here()
        return masks.legal_actions(
            self.obstacles,
            self.robot,
            self.carrying,
            shelf,
            self.inventory[b, np.maximum(shelf, 0)],
            (self.robot == self.dropoff).all(1),
            self.current_items(),
        )

    # -- state exposed to oracles, evaluators and rollout actors --------------------
    def current_items(self) -> np.ndarray:
        """Item of each env's current order, or -1 where the shift is complete."""
        n = self.config.orders_per_shift
        item = self.orders[np.arange(self.num_envs), np.minimum(self.order_index, n - 1)]
        return np.where(self.order_index < n, item, -1)

    def targets(self) -> np.ndarray:
        """Index into ``distances``' second axis: the shelf to visit, or n_items for
        the drop-off when the robot carries the current order's item."""
        current = self.current_items()
        held = self.carrying - 1
        return np.where(
            self.carrying == 0,
            np.maximum(current, 0),
            np.where(held == current, self.config.n_items, held),
        )

    def target_cells(self) -> np.ndarray:
        """(B, 2) cell each robot should head for next."""
        cells = np.concatenate([self.shelves, self.dropoff[:, None]], axis=1)
        return cells[np.arange(self.num_envs), self.targets()]

    def persistent_state(self, index: int) -> dict[str, list[int]]:
        return {"inventory": self.inventory[index].tolist()}

    # -- dynamics ------------------------------------------------------------------
    def _apply(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        w, b = self.config.rewards, np.arange(self.num_envs)
        zeros = np.zeros(self.num_envs)
        parts = {name: zeros.copy() for name in REWARD_COMPONENTS}
        parts["step"][:] = w.step
        current, targets = self.current_items(), self.targets()
        acting = ~self.briefing  # memory: an action on an order's issue step is not carried out
        self.briefing[:] = False

        before = self._distance_to(targets)
        moved = self.robot + _DELTAS[actions]
        h, wd = self.config.height, self.config.width
        inside = (moved >= 0).all(1) & (moved[:, 0] < h) & (moved[:, 1] < wd)
        clipped = np.clip(moved, 0, [h - 1, wd - 1])
        free = inside & ~self.obstacles[b, clipped[:, 0], clipped[:, 1]]
        is_move = (actions < PICK) & acting
        self.robot = np.where((is_move & free)[:, None], moved, self.robot)
        closer = is_move & (self._distance_to(targets) < before)
        parts["progress"][closer] = w.progress

        shelf_here = self._shelf_here()
        self._pick((actions == PICK) & acting, shelf_here, current, parts)
        self._drop((actions == DROP) & acting, shelf_here, current, parts)
        return parts

    def _pick(self, picking, shelf_here, current, parts) -> None:
        w, b = self.config.rewards, np.arange(self.num_envs)
        stock = self.inventory[b, np.maximum(shelf_here, 0)]
        ok = picking & (self.carrying == 0) & (shelf_here >= 0) & (stock > 0)
        right = ok & (shelf_here == current)
        paid = right & ~(self.pick_paid & self.config.milestone_once_per_order)
        parts["penalty"][ok & ~right] = w.wrong_pick
        parts["pick"][paid] = w.pick
        self.pick_paid |= paid
        self.carrying = np.where(ok, shelf_here + 1, self.carrying)
        self.inventory[b[ok], shelf_here[ok]] -= 1

    def _drop(self, dropping, shelf_here, current, parts) -> None:
        w, b = self.config.rewards, np.arange(self.num_envs)
        held = self.carrying - 1
        at_dropoff = (self.robot == self.dropoff).all(1)
        holding = dropping & (self.carrying > 0)
        # delivered; in the memory variant a wrong item is shipped too: the order is lost
        closes = holding & at_dropoff & ((held == current) | self.config.memory)
        deliver = closes & (held == current)
        put_back = holding & ~closes & (shelf_here == held)
        parts["deliver"][deliver] = w.deliver
        parts["penalty"][holding & ~deliver & ~put_back] = w.wrong_drop
        self.inventory[b[put_back], held[put_back]] += 1
        self.carrying = np.where(closes | put_back, 0, self.carrying)
        self.order_index += closes
        self.delivered += deliver
        self.pick_paid &= ~closes
        if self.config.memory:
            self.briefing |= closes & (self.order_index < self.config.orders_per_shift)

    def _distance_to(self, targets: np.ndarray) -> np.ndarray:
        b = np.arange(self.num_envs)
        return self.distances[b, targets, self.robot[:, 0], self.robot[:, 1]]

    def _shelf_here(self) -> np.ndarray:
        match = (self.shelves == self.robot[:, None, :]).all(2)
        return np.where(match.any(1), match.argmax(1), -1)

    # -- shifts ----------------------------------------------------------------------
    def _start_shifts(self, envs: np.ndarray, put_back: bool) -> None:
        cfg = self.config
        for i in envs:
            rng = self._rngs[i]
            if self.inventory[i, 0] < 0:
                self.inventory[i] = layout.initial_inventory(cfg, rng)
            else:
                if put_back and self.carrying[i]:
                    self.inventory[i, self.carrying[i] - 1] += 1
                self.inventory[i] = layout.restock(cfg, self.inventory[i])
            self.shift_seeds[i] = layout.shift_seed(rng)
            shift = layout.draw_shift(cfg, int(self.shift_seeds[i]), self.inventory[i])
            self.obstacles[i] = shift.obstacles
            self.dropoff[i] = shift.dropoff
            self.shelves[i] = shift.shelves
            self.orders[i] = shift.orders
        sources = np.concatenate([self.shelves[envs], self.dropoff[envs, None]], axis=1)
        self.distances[envs] = batched_bfs(self.obstacles[envs], sources)
        self._padded[envs] = observation.padded_blocked(self.obstacles[envs], cfg.view_radius)
        self.robot[envs] = self.dropoff[envs]
        self.carrying[envs] = 0
        self.order_index[envs] = 0
        self.pick_paid[envs] = False
        self.steps[envs] = 0
        self.briefing[envs] = cfg.memory
        self.delivered[envs] = 0

    def _observations(self, envs: np.ndarray | None = None) -> np.ndarray:
        envs = np.arange(self.num_envs) if envs is None else envs
        cfg, n = self.config, self.config.orders_per_shift
        robot = self.robot[envs]
        return observation.encode(
            cfg,
            robot=robot,
            target=self.target_cells()[envs],
            dropoff=self.dropoff[envs],
            shelves=self.shelves[envs],
            carrying=self.carrying[envs],
            order_item=self.current_items()[envs],
            orders_left=n - self.order_index[envs],
            inventory=self.inventory[envs],
            view=observation.local_view(self._padded[envs], robot, cfg.view_radius),
            step=self.steps[envs],
            shown=self.briefing[envs] if cfg.memory else None,
        )


def batched_bfs(obstacles: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Shortest-path distances (E, S, H, W) from each of S sources per grid (E, H, W),
    by frontier expansion over the whole batch at once."""
    e, s = sources.shape[:2]
    h, w = obstacles.shape[1:]
    free = ~obstacles[:, None]
    dist = np.full((e, s, h, w), UNREACHABLE, dtype=np.int64)
    frontier = np.zeros((e, s, h, w), dtype=bool)
    frontier[np.arange(e)[:, None], np.arange(s), sources[..., 0], sources[..., 1]] = True
    dist[frontier] = 0
    visited = frontier.copy()
    depth = 0
    while frontier.any():
        depth += 1
        grown = np.zeros_like(frontier)
        grown[..., 1:, :] |= frontier[..., :-1, :]
        grown[..., :-1, :] |= frontier[..., 1:, :]
        grown[..., :, 1:] |= frontier[..., :, :-1]
        grown[..., :, :-1] |= frontier[..., :, 1:]
        frontier = grown & free & ~visited
        dist[frontier] = depth
        visited |= frontier
    return dist
