"""Warehouse-v0: one robot works a shift of orders in a grid warehouse.

This is the reference implementation, written for reading: plain Python over one
warehouse. :mod:`sims.warehouse.vector` is the fast batched twin; a test checks
that both give identical transitions for the same seeds and actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sims.declarations import StateScope
from sims.versioning import simulator_version
from sims.warehouse import layout, masks, observation
from sims.warehouse.config import WarehouseConfig, make_config
from sims.warehouse.layout import DROP, MOVES, PICK, Shift
from sims.warehouse.render import CELL, legend, rgb_frame, text_frame

# Which state variables reset with an episode and which carry over between
# episodes. Persistent ones survive reset(); a seed starts a new world, so
# reset(seed=s) draws them afresh from s (reset(seed=s) is reproducible whatever
# came before), and reset(options={"reset_persistent": True}) redraws them from the
# generator without reseeding. reset(options={"persistent_state": {...}}) sets
# them explicitly (replay uses it).
STATE_VARIABLES: dict[str, StateScope] = {
    "layout": "episode",  # obstacles, drop-off, shelves
    "orders": "episode",  # the shift's order stream
    "order_index": "episode",  # orders delivered so far
    "robot": "episode",  # position; starts at the drop-off
    "carrying": "episode",  # item in hand (returned to its shelf at reset)
    "pick_paid": "episode",  # milestone already paid for the current order
    "step": "episode",  # steps taken this shift
    "inventory": "persistent",  # stock per item type: depletes with picks, restocks per shift
}

# The memory variant (config.memory) has two more: the order is shown only while
# `briefing` (the step it is issued on), and `delivered` counts the orders delivered
# right, since there a wrong delivery also closes its order.
MEMORY_STATE_VARIABLES: dict[str, StateScope] = {
    **STATE_VARIABLES,
    "briefing": "episode",
    "delivered": "episode",
}

REWARD_COMPONENTS = ("step", "progress", "pick", "deliver", "penalty")

# reset() options. `persistent_state` and `shift_seed` together re-create an episode
# exactly (both are reported in reset's info), which is how replay re-simulates.
RESET_OPTIONS = frozenset({"reset_persistent", "persistent_state", "shift_seed"})

PACKAGE_DIR = Path(__file__).parent


class WarehouseEnv(gym.Env[np.ndarray, np.int64]):
    """A grid warehouse: pick each order's item from its shelf, deliver it to the drop-off.

    Example:
        >>> import gymnasium, sims
        >>> env = gymnasium.make("Warehouse-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape == env.observation_space.shape
        True
    """

    # render_cell_pixels (and each instance's render_legend, colour names): how the
    # rgb_array frame draws the grid, for pictures drawn over it (evaluator/visitation.py)
    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["ansi", "rgb_array"],
        "render_fps": 4,
        "render_cell_pixels": CELL,
    }
    state_variables: ClassVar[Mapping[str, StateScope]] = STATE_VARIABLES
    reward_components: ClassVar[tuple[str, ...]] = REWARD_COMPONENTS
    reset_options: ClassVar[frozenset[str]] = RESET_OPTIONS
    # milestone component -> the success component it should lead to; an episode that
    # collects more milestones than successes stalled between them
    milestones: ClassVar[Mapping[str, str]] = {"pick": "deliver"}
    # state_key() is (row, col, carrying): coverage is drawn as a visitation grid
    state_key_fields: ClassVar[tuple[str, ...]] = ("row", "col", "carrying")

    def __init__(
        self,
        size: str = "small",
        rewards: Mapping[str, float] | None = None,
        render_mode: str | None = None,
        config: WarehouseConfig | None = None,
        **overrides: Any,
    ) -> None:
        self.config = config or make_config(size, rewards, **overrides)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_legend": legend(self.config.n_items)}
        self.version = simulator_version("warehouse", PACKAGE_DIR, self.config.to_dict())
        if self.config.memory:
            self.state_variables = MEMORY_STATE_VARIABLES
        self.observation_space = observation.observation_space(self.config)
        self.action_space = spaces.Discrete(6)
        self.inventory: np.ndarray | None = None
        self._shift: Shift | None = None

    # -- Gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        self._settle_inventory(options, fresh_world=seed is not None)
        shift_seed = layout.shift_seed(self.np_random, options)
        shift = layout.draw_shift(self.config, shift_seed, self.inventory)
        self._shift = shift
        self._dist_to_dropoff = layout.bfs_distances(shift.obstacles, shift.dropoff)
        self._dist_to_shelf = [
            layout.bfs_distances(shift.obstacles, (int(r), int(c))) for r, c in shift.shelves
        ]
        self._padded = observation.padded_blocked(shift.obstacles, self.config.view_radius)
        self.robot = shift.dropoff
        self.carrying = 0
        self.order_index = 0
        self.pick_paid = False
        self.steps = 0
        self.briefing = self.config.memory  # memory: the first order is being issued
        self.delivered = 0
        info = {"inventory": self.inventory.copy(), "shift_seed": shift_seed}
        if self.config.action_mask:
            info["action_mask"] = self.action_mask()
        return self._observation(), info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._shift is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in [0, 6), got {action!r}")
        w = self.config.rewards
        parts = dict.fromkeys(REWARD_COMPONENTS, 0.0)
        parts["step"] = w.step
        action, briefing, self.briefing = int(action), self.briefing, False
        if briefing:
            pass  # memory: the robot reads the order slip; the action is not carried out
        elif action in MOVES:
            before = self._target_distance()
            self._move(MOVES[action])
            if self._target_distance() < before:
                parts["progress"] = w.progress
        elif action == PICK:
            parts["pick"], parts["penalty"] = self._pick()
        elif action == DROP:
            parts["deliver"], parts["penalty"] = self._drop()
        self.steps += 1
        reward = (
            parts["step"] + parts["progress"] + parts["pick"] + parts["deliver"] + parts["penalty"]
        )
        terminated = self.order_index == self.config.orders_per_shift
        truncated = not terminated and self.steps >= self.config.max_steps
        info = {
            "reward_components": parts,
            "orders_delivered": self.delivered,
            "is_success": self.delivered == self.config.orders_per_shift,
        }
        if self.config.action_mask:
            info["action_mask"] = self.action_mask()
        return self._observation(), reward, terminated, truncated, info

    def action_mask(self) -> np.ndarray:
        """(6,) bool: the actions that do something here (sims/warehouse/masks.py)."""
        shelf = self._shelf_here()
        return masks.legal_actions(
            self.shift.obstacles[None],
            np.array([self.robot]),
            np.array([self.carrying]),
            np.array([shelf]),
            np.array([self.inventory[shelf] if shelf >= 0 else 0]),
            np.array([self.robot == self.shift.dropoff]),
            np.array([self.current_item]),
        )[0]

    def render(self) -> str | np.ndarray | None:
        """The current state as text (``ansi``) or an RGB image (``rgb_array``); the
        legend of both is in sims/warehouse/render.py."""
        if self._shift is None or self.render_mode not in ("ansi", "rgb_array"):
            return None
        if self.render_mode == "ansi":
            return text_frame(self._shift, self.robot, self.carrying)
        return rgb_frame(self._shift, self.robot, self.carrying)

    # -- state exposed to oracles, evaluators and replay ----------------------------
    @property
    def shift(self) -> Shift:
        assert self._shift is not None, "call reset() first"
        return self._shift

    @property
    def current_item(self) -> int:
        """Item of the current order, or -1 once the shift is complete."""
        if self.order_index >= self.config.orders_per_shift:
            return -1
        return int(self.shift.orders[self.order_index])

    def target(self) -> tuple[int, int]:
        """Where the robot should head: the shelf of what it should pick or return,
        or the drop-off when it carries the current order's item."""
        if self.carrying == 0:
            return tuple(self.shift.shelves[max(self.current_item, 0)])
        if self.carrying - 1 == self.current_item:
            return self.shift.dropoff
        return tuple(self.shift.shelves[self.carrying - 1])

    def distance_map(self, cell: tuple[int, int]) -> np.ndarray:
        """Shortest-path distances to ``cell`` (the drop-off or a shelf)."""
        if tuple(cell) == self.shift.dropoff:
            return self._dist_to_dropoff
        for k, shelf in enumerate(self.shift.shelves):
            if tuple(shelf) == tuple(cell):
                return self._dist_to_shelf[k]
        raise KeyError(f"{cell} is neither the drop-off nor a shelf")

    def oracle_action(self) -> int:
        """The known-optimal action here (sims/warehouse/oracle.py says why it is)."""
        from sims.warehouse.oracle import WarehouseOracle  # the oracle imports this module

        return WarehouseOracle().act(self)

    def state_key(self) -> tuple[int, int, int]:
        """The robot's cell and what it carries: the unit of state coverage."""
        return (int(self.robot[0]), int(self.robot[1]), int(self.carrying))

    def reachable_state_count(self) -> int:
        """How many state keys this shift can reach: free cells x (nothing or an item)."""
        return int((~self.shift.obstacles).sum()) * (self.config.n_items + 1)

    def persistent_state(self) -> dict[str, list[int]]:
        return {"inventory": [] if self.inventory is None else self.inventory.tolist()}

    # -- dynamics ------------------------------------------------------------------
    def _settle_inventory(self, options: Mapping[str, Any], fresh_world: bool) -> None:
        unknown = set(options) - RESET_OPTIONS
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}")
        if "persistent_state" in options:
            self.inventory = _checked_inventory(options["persistent_state"], self.config)
        elif fresh_world or self.inventory is None or options.get("reset_persistent", False):
            self.inventory = layout.initial_inventory(self.config, self.np_random)
        else:
            if self._shift is not None and self.carrying:
                self.inventory[self.carrying - 1] += 1  # the robot puts back what it holds
            self.inventory = layout.restock(self.config, self.inventory)

    def _target_distance(self) -> int:
        return int(self.distance_map(self.target())[self.robot])

    def _move(self, delta: tuple[int, int]) -> None:
        r, c = self.robot[0] + delta[0], self.robot[1] + delta[1]
        height, width = self.shift.obstacles.shape
        if 0 <= r < height and 0 <= c < width and not self.shift.obstacles[r, c]:
            self.robot = (r, c)

    def _shelf_here(self) -> int:
        for k, (r, c) in enumerate(self.shift.shelves):
            if (r, c) == self.robot:
                return k
        return -1

    def _pick(self) -> tuple[float, float]:
        w, item = self.config.rewards, self._shelf_here()
        if self.carrying or item < 0 or self.inventory[item] == 0:
            return 0.0, 0.0  # nothing to pick: a no-op that costs only the step
        self.carrying = item + 1
        self.inventory[item] -= 1
        if item != self.current_item:
            return 0.0, w.wrong_pick
        if self.pick_paid and self.config.milestone_once_per_order:
            return 0.0, 0.0
        self.pick_paid = True
        return w.pick, 0.0

    def _drop(self) -> tuple[float, float]:
        w = self.config.rewards
        if self.carrying == 0:
            return 0.0, 0.0  # nothing to drop: a no-op
        item = self.carrying - 1
        right = item == self.current_item
        if self.robot == self.shift.dropoff and (right or self.config.memory):
            # delivered; in the memory variant a wrong item is shipped too: the order is lost
            self.carrying, self.pick_paid = 0, False
            self.order_index += 1
            self.delivered += right
            self.briefing = self.config.memory and self.current_item >= 0
            return (w.deliver, 0.0) if right else (0.0, w.wrong_drop)
        if self._shelf_here() == item:
            self.carrying = 0
            self.inventory[item] += 1
            return 0.0, 0.0
        return 0.0, w.wrong_drop

    def _observation(self) -> np.ndarray | dict[str, Any]:
        flat = self._flat_observation()[None]
        shown = observation.present(self.config, flat)
        return shown[0] if isinstance(shown, np.ndarray) else {k: v[0] for k, v in shown.items()}

    def _flat_observation(self) -> np.ndarray:
        shift, cfg = self.shift, self.config
        robot = np.array([self.robot], dtype=np.int64)
        return observation.encode(
            cfg,
            robot=robot,
            target=np.array([self.target()], dtype=np.int64),
            dropoff=np.array([shift.dropoff], dtype=np.int64),
            shelves=shift.shelves[None],
            carrying=np.array([self.carrying]),
            order_item=np.array([self.current_item]),
            orders_left=np.array([cfg.orders_per_shift - self.order_index]),
            inventory=self.inventory[None],
            view=observation.local_view(self._padded[None], robot, cfg.view_radius),
            step=np.array([self.steps]),
            shown=np.array([self.briefing]) if cfg.memory else None,
        )[0]


def _checked_inventory(state: Mapping[str, Any], config: WarehouseConfig) -> np.ndarray:
    inventory, cap = np.asarray(state.get("inventory"), dtype=np.int64), config.stock_capacity
    if inventory.shape != (config.n_items,) or ((inventory < 0) | (inventory > cap)).any():
        raise ValueError(
            f"persistent_state.inventory must be {config.n_items} ints in [0, {cap}], "
            f"got {state.get('inventory')!r}"
        )
    if inventory.sum() < config.orders_per_shift:
        raise ValueError("persistent_state.inventory cannot cover one shift of orders")
    return inventory.copy()
