"""The observation vector of Warehouse-v0, built for a batch of warehouses at once.

The single environment calls :func:`encode` with a batch of one, so both
implementations produce bit-identical observations. Layout of the float32 vector
(K = n_items, V = 2 * view_radius + 1), every entry in [-1, 1]:

==================  ======  ===================================================
slice               size    meaning
==================  ======  ===================================================
robot               2       row / (H-1), col / (W-1)
target_offset       2       (target - robot) / (H-1, W-1): where to head next (the
                            shelf to pick from or return to, or the drop-off)
at_target           1       1 when the robot stands on its target
dropoff_offset      2       (drop-off - robot) / (H-1, W-1)
shelf_offsets       2K      (shelf of item k - robot) / (H-1, W-1), k = 0..K-1
carrying            K+1     one-hot: 0 = empty hands, 1 + k = carrying item k
order               K+1     one-hot: 0 = shift complete, 1 + k = current order is item k
orders_left         1       undelivered orders / orders_per_shift
inventory           K       stock of item k / stock_capacity (persists across shifts)
local_view          V*V     1 where the cell around the robot is blocked (pillar or wall)
time_left           1       1 - step / max_steps
==================  ======  ===================================================
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from sims.warehouse.config import WarehouseConfig


def observation_size(config: WarehouseConfig) -> int:
    k, v = config.n_items, 2 * config.view_radius + 1
    return 2 + 2 + 1 + 2 + 2 * k + (k + 1) + (k + 1) + 1 + k + v * v + 1


def observation_space(config: WarehouseConfig) -> spaces.Box | spaces.Dict:
    flat = spaces.Box(-1.0, 1.0, shape=(observation_size(config),), dtype=np.float32)
    if config.observation == "flat":
        return flat
    k, v = config.n_items, 2 * config.view_radius + 1
    return spaces.Dict(
        {
            "position": spaces.Box(-1.0, 1.0, (7 + 2 * k,), np.float32),
            "carrying": spaces.Discrete(k + 1),
            "order": spaces.Discrete(k + 1),
            "orders_left": spaces.Box(0.0, 1.0, (1,), np.float32),
            "inventory": spaces.Box(0.0, 1.0, (k,), np.float32),
            "local_map": spaces.Box(0.0, 1.0, (v, v), np.float32),
            "time_left": spaces.Box(0.0, 1.0, (1,), np.float32),
        }
    )


def present(config: WarehouseConfig, flat: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
    """Observation vectors (B, D) in the configured form: as they are, or (``dict``)
    as named parts, each (B, ...): the robot's and targets' positions (the first
    7 + 2K entries), what it carries and the current order (as Discrete indices),
    orders left, inventory, the local map (V x V) and the time left."""
    if config.observation == "flat":
        return flat
    k, v = config.n_items, 2 * config.view_radius + 1
    edges = np.cumsum([7 + 2 * k, k + 1, k + 1, 1, k, v * v, 1])
    position, carrying, order, left, stock, view, time_left = np.split(flat, edges[:-1], axis=1)
    return {
        "position": position,
        "carrying": carrying.argmax(1),
        "order": order.argmax(1),
        "orders_left": left,
        "inventory": stock,
        "local_map": view.reshape(len(flat), v, v),
        "time_left": time_left,
    }


def padded_blocked(obstacles: np.ndarray, radius: int) -> np.ndarray:
    """Obstacle grids (..., H, W) padded with ``radius`` blocked cells on each side."""
    pad = [(0, 0)] * (obstacles.ndim - 2) + [(radius, radius), (radius, radius)]
    return np.pad(obstacles, pad, constant_values=True)


def local_view(padded: np.ndarray, robot: np.ndarray, radius: int) -> np.ndarray:
    """Blocked flags (B, V, V) around each robot, from padded grids (B, H+2r, W+2r)."""
    offsets = np.arange(2 * radius + 1)
    rows = robot[:, 0, None] + offsets  # padded coordinates: robot + r - r + offset
    cols = robot[:, 1, None] + offsets
    batch = np.arange(len(robot))[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def encode(
    config: WarehouseConfig,
    robot: np.ndarray,  # (B, 2) int
    target: np.ndarray,  # (B, 2) int
    dropoff: np.ndarray,  # (B, 2) int
    shelves: np.ndarray,  # (B, K, 2) int
    carrying: np.ndarray,  # (B,) int, 0 = nothing, 1 + k = item k
    order_item: np.ndarray,  # (B,) int, -1 = shift complete
    orders_left: np.ndarray,  # (B,) int
    inventory: np.ndarray,  # (B, K) int
    view: np.ndarray,  # (B, V, V) bool
    step: np.ndarray,  # (B,) int
    shown: np.ndarray | None = None,  # (B,) bool: memory variant, the order is shown
) -> np.ndarray:
    """Assemble the observation vectors (B, D) as float32. With ``shown`` (the memory
    variant), rows where it is False and an order is open carry zeros for the target
    offset, at-target and the order one-hot: the order is hidden."""
    batch, k = len(robot), config.n_items
    scale = np.array([max(config.height - 1, 1), max(config.width - 1, 1)], dtype=np.float32)
    parts = [
        robot.astype(np.float32) / scale,
        (target - robot).astype(np.float32) / scale,
        (target == robot).all(1, keepdims=True).astype(np.float32),
        (dropoff - robot).astype(np.float32) / scale,
        ((shelves - robot[:, None, :]).astype(np.float32) / scale).reshape(batch, 2 * k),
        _one_hot(carrying, k + 1),
        _one_hot(order_item + 1, k + 1),
        (orders_left.astype(np.float32) / np.float32(config.orders_per_shift))[:, None],
        inventory.astype(np.float32) / np.float32(config.stock_capacity),
        view.reshape(batch, -1).astype(np.float32),
        (np.float32(1.0) - step.astype(np.float32) / np.float32(config.max_steps))[:, None],
    ]
    out = np.concatenate(parts, axis=1)
    if shown is not None:
        hidden = ~shown & (order_item >= 0)
        order = 8 + 3 * k  # robot, target, at-target, drop-off, shelves, carrying
        out[hidden, 2:5] = 0.0
        out[hidden, order : order + k + 1] = 0.0
    return out


def _one_hot(index: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((len(index), size), dtype=np.float32)
    out[np.arange(len(index)), index] = 1.0
    return out
