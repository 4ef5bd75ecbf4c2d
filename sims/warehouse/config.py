"""Configuration of the Warehouse simulator: sizes, reward weights and their checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the hierarchical reward; each is reported as its own component."""

    step: float = -0.01  # paid on every step: a shift should be short
    progress: float = 0.01  # a move that brings the robot closer to its current target
    pick: float = 1.0  # milestone: the current order's item picked (once per order)
    deliver: float = 10.0  # sparse success: the current order delivered at the drop-off
    wrong_pick: float = -0.1  # a pick that takes an item other than the current order's
    wrong_drop: float = -0.1  # dropping an item where it is neither delivered nor returned


@dataclass(frozen=True)
class WarehouseConfig:
    """One warehouse: grid, stock, the shift's orders, and the reward weights."""

    height: int = 6  # grid rows
    width: int = 6  # grid columns
    n_items: int = 3  # item types; each is stocked on exactly one shelf
    n_obstacles: int = 4  # rack pillars, drawn among cells with odd row and odd column
    orders_per_shift: int = 3  # orders in one episode
    max_steps: int = 100  # step budget of a shift (truncation)
    stock_capacity: int = 6  # most units one shelf holds
    initial_stock_min: int = 2  # fewest units a shelf starts with (after reset_persistent)
    restock_per_shift: int = 1  # units added to every shelf at the start of each shift
    view_radius: int = 2  # the robot sees obstacles within this many cells
    milestone_once_per_order: bool = True  # False pays every right pick: a hackable reward
    observation: str = "flat"  # flat: one vector; dict: named parts (observation.py)
    action_mask: bool = False  # True: info["action_mask"] marks the actions that do something
    # True: the memory variant (docs/simulator.md): an order is shown only on the step it is
    # issued (an action then is not carried out), one delivery attempt per order
    memory: bool = False
    rewards: RewardWeights = field(default_factory=RewardWeights)

    def __post_init__(self) -> None:
        if isinstance(self.rewards, Mapping):
            object.__setattr__(self, "rewards", _replace_checked(RewardWeights(), self.rewards))
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid WarehouseConfig: " + "; ".join(problems))

    def _problems(self):
        if self.height < 3 or self.width < 3:
            yield f"grid must be at least 3x3, got {self.height}x{self.width}"
        pillars = (self.height // 2) * (self.width // 2)
        if not 0 <= self.n_obstacles <= pillars:
            yield f"n_obstacles must be in [0, {pillars}] for this grid, got {self.n_obstacles}"
        free = self.height * self.width - self.n_obstacles
        if self.n_items < 1 or self.n_items + 1 > free:
            yield f"n_items must be in [1, {free - 1}], got {self.n_items}"
        if self.orders_per_shift < 1:
            yield "orders_per_shift must be >= 1"
        if self.restock_per_shift * self.n_items < self.orders_per_shift:
            yield "restock_per_shift * n_items must cover orders_per_shift (shifts stay feasible)"
        if self.initial_stock_min * self.n_items < self.orders_per_shift:
            yield "initial_stock_min * n_items must cover orders_per_shift"
        if not 0 <= self.initial_stock_min <= self.stock_capacity:
            yield "initial_stock_min must be in [0, stock_capacity]"
        if self.max_steps < self.min_budget:
            yield f"max_steps must be >= {self.min_budget} so every shift can be completed"
        if self.view_radius < 0:
            yield "view_radius must be >= 0"
        if self.observation not in ("flat", "dict"):
            yield f"observation must be 'flat' or 'dict', got {self.observation!r}"
        if self.memory and (self.observation != "flat" or self.action_mask):
            yield "memory needs observation='flat' and action_mask=False (they show the order)"

    @property
    def min_budget(self) -> int:
        """Steps that always suffice for the oracle: each order walks at most
        (height + width) cells out and back (a pillar detour costs 2), plus pick and drop
        (and, with ``memory``, the step the order is issued on)."""
        return self.orders_per_shift * (2 * (self.height + self.width) + 2 + int(self.memory))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SIZES: dict[str, WarehouseConfig] = {
    "small": WarehouseConfig(),
    "medium": WarehouseConfig(
        height=10, width=10, n_items=5, n_obstacles=12, orders_per_shift=5, max_steps=250
    ),
    "large": WarehouseConfig(
        height=16,
        width=16,
        n_items=8,
        n_obstacles=32,
        orders_per_shift=8,
        max_steps=600,
        stock_capacity=10,
    ),
}

# Warehouse-Memory-v0 (registered in sims/__init__.py): a 4x4 warehouse without pillars,
# the order hidden after its issue step, one order per shift, every shelf always full (so
# orders are uniform over the 3 items) and a wrong pick that costs what a right one earns,
# split over the other items (so picking every shelf to collect the milestone does not
# pay). The tiny floor keeps the walking easy, so what is hard is remembering: on the
# 6x6 floor an LSTM found no delivery in 1.6M env steps, on this one it reaches the oracle
# by 1.25M (docs/simulator.md).
MEMORY_VARIANT: dict[str, Any] = {
    "memory": True,
    "height": 4,
    "width": 4,
    "n_obstacles": 0,
    "orders_per_shift": 1,
    "max_steps": 24,
    "initial_stock_min": 6,
    "rewards": {"wrong_pick": -0.5},
}


def _replace_checked(base: Any, overrides: Mapping[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown {type(base).__name__} key(s) {unknown}; known keys: {sorted(known)}"
        )
    return dataclasses.replace(base, **overrides)


def make_config(
    size: str = "small", rewards: Mapping[str, float] | None = None, **overrides: Any
) -> WarehouseConfig:
    """Build a config from a named size, reward overrides and field overrides.

    >>> make_config("small", rewards={"deliver": 5.0}, max_steps=120).rewards.deliver
    5.0
    """
    if size not in SIZES:
        raise ValueError(f"unknown warehouse size {size!r}; choose one of {sorted(SIZES)}")
    base = SIZES[size]
    if rewards:
        overrides["rewards"] = _replace_checked(base.rewards, rewards)
    return _replace_checked(base, overrides)
