"""The known-optimal policy of Warehouse-v0.

For each order in turn the oracle walks a shortest path to the shelf of the
ordered item, picks, walks a shortest path back to the drop-off, and drops.

Why it is optimal (for weights with ``step + progress <= 0``, ``progress >= 0``
and ``pick + deliver > -2 * step``, which the defaults satisfy): a shift's return
is the sum of (a) deliveries, at most one per order; (b) pick milestones, paid at
most once per order; (c) moves, each worth ``step`` plus at most ``progress``, so
at most 0; (d) pick and drop actions, each worth ``step`` plus a penalty <= 0. Every
order needs at least one pick and one drop. The oracle collects every delivery and
every milestone, makes exactly two non-move actions per order, and every move it
makes is along a shortest path, so it earns ``step + progress`` on each. No
policy can do better on any term, so its return is the maximum. Every shelf has
its own item type, so there is no choice of shelf to get wrong, and the step
budget always suffices (``WarehouseConfig.min_budget``). In the memory variant
(``config.memory``) every policy also spends one step per order on its issue step,
and a wrong delivery only loses an order, so the same argument holds.
"""

from __future__ import annotations

import numpy as np

from sims.warehouse.env import WarehouseEnv
from sims.warehouse.layout import DROP, MOVES, PICK


def optimal_return(env: WarehouseEnv) -> float:
    """The oracle's return for the shift ``env`` was just reset to (no stepping)."""
    w, n = env.config.rewards, env.config.orders_per_shift
    moves = sum(
        2 * int(env.distance_map(tuple(env.shift.shelves[item]))[env.shift.dropoff])
        for item in env.shift.orders
    )
    briefings = n if env.config.memory else 0  # memory: each order's issue step
    return n * (w.pick + w.deliver) + (2 * n + briefings) * w.step + moves * (w.step + w.progress)


class WarehouseOracle:
    """Acts on the environment's state (not its observation): ``act(env.unwrapped)``."""

    def act(self, env: WarehouseEnv) -> int:
        target = env.target()
        if env.robot == tuple(target):
            return PICK if env.carrying == 0 else DROP
        dist = env.distance_map(target)
        here = dist[env.robot]
        height, width = dist.shape
        for action, (dr, dc) in MOVES.items():
            r, c = env.robot[0] + dr, env.robot[1] + dc
            if 0 <= r < height and 0 <= c < width and dist[r, c] == here - 1:
                return action
        raise RuntimeError(f"no shortest-path move from {env.robot} to {target}")

    def run_shift(self, env: WarehouseEnv) -> tuple[float, int]:
        """Play the current shift to its end; return (return, steps)."""
        total, steps, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(self.act(env))
            total += reward
            steps += 1
            done = terminated or truncated
        return total, steps


def oracle_actions(env) -> np.ndarray:
    """Oracle actions for every env of a :class:`WarehouseVectorEnv`, vectorized."""
    b = np.arange(env.num_envs)
    targets = env.targets()
    dist = env.distances[b, targets]  # (B, H, W)
    at_goal = (env.robot == env.target_cells()).all(1)
    here = dist[b, env.robot[:, 0], env.robot[:, 1]]
    action = np.full(env.num_envs, -1, dtype=np.int64)
    h, w = dist.shape[1:]
    for move in reversed(list(MOVES)):  # the first matching move wins, as in act()
        dr, dc = MOVES[move]
        r, c = env.robot[:, 0] + dr, env.robot[:, 1] + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        nxt = dist[b, np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
        action = np.where(inside & (nxt == here - 1), move, action)
    return np.where(at_goal, np.where(env.carrying == 0, PICK, DROP), action)
