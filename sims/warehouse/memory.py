"""The memory variant's ceiling without memory: an exact bound and a policy that meets it.

In the memory variant (``WarehouseConfig.memory``, registered as Warehouse-Memory-v0)
an order is shown only on the step it is issued, and the action of that step is not
carried out. So everything a policy sees after that step is the same whichever item
was ordered: a policy that does not carry the issue step's observation forward (an MLP
on the current observation, say) chooses what it picks and delivers blind. With every
shelf full at every shift start, orders are uniform over the ``K`` items, and such a
policy can expect per order at most

    (pick + deliver) / K + (K - 1) / K * (wrong_pick + wrong_drop) + 3 * step

(one delivery attempt per order, right with probability ``1 / K``; each distinct pick
right with probability ``1 / K``, and with ``pick + (K - 1) * wrong_pick <= 0`` picking
more than one shelf does not pay; the issue step, the pick and the drop cost a step
each; moves earn at most 0). :func:`memoryless_bound` computes it; :func:`guess_actions`
is a blind policy that comes within the wrong trips' step costs of it: it always fetches
the item whose shelf is nearest the drop-off. The oracle, which sees the state, earns
``pick + deliver + 3 * step`` per order plus ``step + progress`` per move (0 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sims.warehouse.config import WarehouseConfig
from sims.warehouse.layout import DROP, MOVES, PICK
from sims.warehouse.oracle import oracle_actions
from sims.warehouse.vector import WarehouseVectorEnv


def memoryless_bound(config: WarehouseConfig) -> float:
    """The most a policy without memory can expect per shift (module docstring).

    Raises ``ValueError`` where the argument does not hold: not the memory variant,
    shelves not always full at a shift start (orders would not be uniform), or weights
    under which several picks, or moves, could pay.
    """
    w, k, n = config.rewards, config.n_items, config.orders_per_shift
    problems = [
        ("memory is off", not config.memory),
        (
            "shelves are not full at every shift start (initial_stock_min < stock_capacity "
            "or restock_per_shift < orders_per_shift)",
            config.initial_stock_min < config.stock_capacity
            or config.restock_per_shift < config.orders_per_shift,
        ),
        ("pick + (K - 1) * wrong_pick > 0", w.pick + (k - 1) * w.wrong_pick > 0),
        ("a move can earn more than 0", w.step + w.progress > 0 or w.progress < 0),
        ("the milestone is paid more than once per order", not config.milestone_once_per_order),
        ("a penalty is positive", max(w.wrong_pick, w.wrong_drop, w.step) > 0),
    ]
    failed = [name for name, bad in problems if bad]
    if failed:
        raise ValueError("the memoryless bound does not hold: " + "; ".join(failed))
    per_order = (w.pick + w.deliver) / k + (k - 1) / k * (w.wrong_pick + w.wrong_drop)
    return n * max(per_order + 3 * w.step, 0.0)


def guess_actions(env: WarehouseVectorEnv) -> np.ndarray:
    """A blind policy for every env of a memory-variant vector env: fetch the item whose
    shelf is nearest the drop-off (the lowest index among equals), deliver whatever is
    carried. It reads the layout and the robot, never the order."""
    b, k = np.arange(env.num_envs), env.config.n_items
    to_shelf = env.distances[b, :k, env.dropoff[:, 0], env.dropoff[:, 1]]  # (B, K)
    targets = np.where(env.carrying == 0, to_shelf.argmin(1), k)  # k: the drop-off
    cells = np.concatenate([env.shelves, env.dropoff[:, None]], axis=1)[b, targets]
    dist = env.distances[b, targets]
    here = dist[b, env.robot[:, 0], env.robot[:, 1]]
    action = np.full(env.num_envs, PICK, dtype=np.int64)
    h, w = dist.shape[1:]
    for move in reversed(list(MOVES)):  # the first shortest-path move, as the oracle's
        dr, dc = MOVES[move]
        r, c = env.robot[:, 0] + dr, env.robot[:, 1] + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        nxt = dist[b, np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
        action = np.where(inside & (nxt == here - 1), move, action)
    at_goal = (env.robot == cells).all(1)
    return np.where(at_goal, np.where(env.carrying == 0, PICK, DROP), action)


@dataclass(frozen=True)
class Ceiling:
    """Mean first-shift returns over ``episodes`` fresh worlds (seeds ``seed ..``)."""

    episodes: int
    oracle: float  # the optimum
    guess: float  # guess_actions: the measured memoryless return
    bound: float  # memoryless_bound: no policy without memory expects more
    guess_std: float  # standard deviation of one episode's guess return

    @property
    def guess_fraction(self) -> float:
        return self.guess / self.oracle

    @property
    def bound_fraction(self) -> float:
        return self.bound / self.oracle


def measure_ceiling(config: WarehouseConfig, episodes: int = 4096, seed: int = 0) -> Ceiling:
    """Play the first shift of ``episodes`` worlds (``reset(seed=seed + i)``, as the
    evaluator does) with the oracle and with :func:`guess_actions`."""
    returns = {}
    for name, policy in (("oracle", oracle_actions), ("guess", guess_actions)):
        env = WarehouseVectorEnv(episodes, config=config)
        env.reset(seed=seed)
        total, running = np.zeros(episodes), np.ones(episodes, dtype=bool)
        while running.any():
            _, reward, terminated, truncated, _ = env.step(policy(env))
            total += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
        returns[name] = total
    return Ceiling(
        episodes=episodes,
        oracle=float(returns["oracle"].mean()),
        guess=float(returns["guess"].mean()),
        bound=memoryless_bound(config),
        guess_std=float(returns["guess"].std()),
    )
