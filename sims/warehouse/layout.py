"""Drawing a shift from the environment's random generator.

Both the single environment and the batched one call :func:`draw_shift`, so the
same seed gives the same warehouse in either. Obstacles are rack pillars on cells
with an odd row and an odd column: every other cell stays free, so the free floor
is always connected and every shelf is reachable from the drop-off by
construction (no rejection sampling, no retries).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cache

import numpy as np

from sims.warehouse.config import WarehouseConfig

UNREACHABLE = 10_000  # distance of a cell the robot cannot reach (an obstacle)

# Action ids and the moves they make, (d_row, d_col).
UP, DOWN, LEFT, RIGHT, PICK, DROP = range(6)
MOVES: dict[int, tuple[int, int]] = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}
ACTION_NAMES = ("up", "down", "left", "right", "pick", "drop")


@dataclass(frozen=True)
class Shift:
    """What one episode is played on: the layout and the order stream."""

    obstacles: np.ndarray  # (H, W) bool
    dropoff: tuple[int, int]  # the robot starts each shift here
    shelves: np.ndarray  # (n_items, 2) int: shelf of item k is at shelves[k]
    orders: np.ndarray  # (orders_per_shift,) int: item ids, delivered in this order


@cache
def pillar_cells(height: int, width: int) -> np.ndarray:
    """Flat indices of the cells that may hold a pillar (odd row, odd column)."""
    rows, cols = np.meshgrid(np.arange(1, height, 2), np.arange(1, width, 2), indexing="ij")
    return (rows * width + cols).ravel()


def initial_inventory(config: WarehouseConfig, rng: np.random.Generator) -> np.ndarray:
    """Stock levels after a `reset_persistent`: one draw per item type."""
    return rng.integers(
        config.initial_stock_min, config.stock_capacity + 1, size=config.n_items
    ).astype(np.int64)


def restock(config: WarehouseConfig, inventory: np.ndarray) -> np.ndarray:
    """The restock rule applied at the start of every shift after the first."""
    return np.minimum(inventory + config.restock_per_shift, config.stock_capacity)


def draw_orders(
    config: WarehouseConfig, rng: np.random.Generator, inventory: np.ndarray
) -> np.ndarray:
    """Orders drawn in proportion to stock, never more of an item than is stocked,
    so every shift can be completed and the order mix drifts with the inventory."""
    remaining = inventory.tolist()
    orders = []
    for u in rng.random(config.orders_per_shift).tolist():
        ticket = int(u * sum(remaining))  # a uniform draw over the units in stock
        item = 0
        while ticket >= remaining[item]:
            ticket -= remaining[item]
            item += 1
        orders.append(item)
        remaining[item] -= 1
    return np.array(orders, dtype=np.int64)


def shift_seed(rng: np.random.Generator, options: dict | None = None) -> int:
    """The seed a shift is drawn from: taken from the env's generator, or given in
    ``options["shift_seed"]`` to re-create a logged episode."""
    drawn = int(rng.integers(2**63))
    return int(options["shift_seed"]) if options and "shift_seed" in options else drawn


def draw_shift(config: WarehouseConfig, seed: int, inventory: np.ndarray) -> Shift:
    """Draw obstacles, drop-off, shelves and orders, in that order, from ``seed``."""
    rng = np.random.default_rng(seed)
    n_cells = config.height * config.width
    pillars = rng.permutation(pillar_cells(config.height, config.width))
    obstacles = np.zeros(n_cells, dtype=bool)
    obstacles[pillars[: config.n_obstacles]] = True
    picked = rng.permutation(np.flatnonzero(~obstacles))[: config.n_items + 1]
    dropoff = divmod(int(picked[0]), config.width)
    shelves = np.array([divmod(int(c), config.width) for c in picked[1:]], dtype=np.int64)
    return Shift(
        obstacles=obstacles.reshape(config.height, config.width),
        dropoff=dropoff,
        shelves=shelves,
        orders=draw_orders(config, rng, inventory),
    )


def bfs_distances(obstacles: np.ndarray, source: tuple[int, int]) -> np.ndarray:
    """Shortest-path length from ``source`` to every cell (plain BFS, the reference)."""
    height, width = obstacles.shape
    dist = np.full((height, width), UNREACHABLE, dtype=np.int64)
    dist[source] = 0
    queue = deque([source])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES.values():
            nr, nc = r + dr, c + dc
            inside = 0 <= nr < height and 0 <= nc < width
            if inside and not obstacles[nr, nc] and dist[nr, nc] == UNREACHABLE:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist
