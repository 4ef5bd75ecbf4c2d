"""Warehouse-v0's legal-action masks (``action_mask=True``): a batch at a time.

An action is masked where it would do nothing at all (Gymnasium's ``info["action_mask"]``
convention: ``True`` = legal): a move into a wall, a pillar or off the grid; a pick with
full hands, off a shelf or at an empty one; a drop with empty hands, or anywhere but the
drop-off with the ordered item or the item's own shelf (those drops only cost a
penalty). A wrong pick stays legal: it does something (and is penalised). The single
env calls :func:`legal_actions` with a batch of one, so both agree exactly.
"""

from __future__ import annotations

import numpy as np

from sims.warehouse.layout import DROP, MOVES, PICK

N_ACTIONS = 6


def legal_actions(
    obstacles: np.ndarray,  # (B, H, W) bool
    robot: np.ndarray,  # (B, 2) int
    carrying: np.ndarray,  # (B,) int, 0 = nothing, 1 + k = item k
    shelf_here: np.ndarray,  # (B,) int, -1 = not on a shelf
    stock_here: np.ndarray,  # (B,) int, the stock of the shelf here (any value off shelves)
    at_dropoff: np.ndarray,  # (B,) bool
    current: np.ndarray,  # (B,) int, the ordered item, -1 = shift complete
) -> np.ndarray:
    """(B, 6) bool: which actions do something in each warehouse."""
    batch = np.arange(len(robot))
    height, width = obstacles.shape[1:]
    legal = np.zeros((len(robot), N_ACTIONS), dtype=bool)
    for action, (dr, dc) in MOVES.items():
        r, c = robot[:, 0] + dr, robot[:, 1] + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        legal[:, action] = (
            inside & ~obstacles[batch, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
        )
    held = carrying - 1
    legal[:, PICK] = (carrying == 0) & (shelf_here >= 0) & (stock_here > 0)
    legal[:, DROP] = (carrying > 0) & ((at_dropoff & (held == current)) | (shelf_here == held))
    return legal
