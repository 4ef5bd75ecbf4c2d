"""The exact optimum of Inventory-v0's single-item, constant-demand case.

With one item and a constant Poisson rate ``lam``, an episode is a finite-horizon
Markov decision process on ``(x, p_0 .. p_{L-1})``: the stock on hand and the orders
in transit (``p_j`` arrives in ``j + 1`` steps). Backward induction over all
``(capacity + 1) * (max_order + 1)^L`` states gives the optimal expected cost of every
state at every step, and the optimal order, over all policies (not only base-stock
ones: with lost sales and a lead time, base-stock is not optimal).

One step, as :mod:`sims.inventory.dynamics` plays it: order ``q`` (cost
``order_fixed * [q > 0] + order_unit * q``); ``y = min(x + p_0, C)`` is shelved
(``y = min(x + q, C)`` when ``L = 0``); demand ``d`` is served, ``x' = y - min(y, d)``
remains (cost ``holding * x'``), ``(d - y)^+`` is lost (cost ``lost_sale`` each); the
pipeline becomes ``(p_1 .. p_{L-1}, q)``. So with ``V_H = 0``:

``V_t(x, p) = G(y) + min_q [c(q) + sum_x' P(x' | y) V_{t+1}(x', p_1 .. p_{L-1}, q)]``

where ``G(y) = holding * E(y - d)^+ + lost_sale * E(d - y)^+``: exact expectations over
the Poisson demand, with no truncation (every ``d >= y`` leads to ``x' = 0``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from sims.inventory.config import InventoryConfig


@dataclass(frozen=True)
class Solution:
    """Optimal orders and costs-to-go of one (config, rate)."""

    orders: np.ndarray  # (H, C + 1, (M + 1)^(L - 1)...) optimal q by step, shelved y, p_1..
    cost: np.ndarray  # (C + 1, (M + 1)^L...) optimal expected episode cost from step 0
    lead_time: int
    capacity: int

    def order(self, t: int, stock: int, pipeline: np.ndarray) -> int:
        """The optimal order at step ``t`` in state (stock, pipeline)."""
        if self.lead_time == 0:
            return int(self.orders[t][stock])
        shelved = min(stock + int(pipeline[0]), self.capacity)
        return int(self.orders[t][(shelved, *map(int, pipeline[1:]))])

    def optimal_return(self, stock: int, pipeline: np.ndarray) -> float:
        """The optimal expected episode return (minus the cost) from a start state."""
        return -float(self.cost[(stock, *map(int, pipeline))])


def poisson_pmf(lam: float, size: int) -> np.ndarray:
    """P(d = 0 .. size - 1) for d ~ Poisson(lam)."""
    pmf = np.empty(size)
    pmf[0] = math.exp(-lam)
    for n in range(1, size):
        pmf[n] = pmf[n - 1] * lam / n
    return pmf


def shelf_model(lam: float, capacity: int, holding: float, lost_sale: float):
    """``(T, G)``: ``T[y, x']`` = P(x' remains | y shelved), ``G[y]`` the expected
    holding and lost-sales cost of the step, for y = 0 .. capacity."""
    pmf = poisson_pmf(lam, capacity + 1)
    sizes = np.arange(capacity + 1)
    transition = np.zeros((capacity + 1, capacity + 1))
    cost = np.zeros(capacity + 1)
    for y in sizes:
        transition[y, y - sizes[:y]] = pmf[:y]  # d = j < y leaves y - j
        transition[y, 0] += 1.0 - pmf[:y].sum()  # d >= y empties the shelf
        over = float(((y - sizes[:y]) * pmf[:y]).sum())  # E(y - d)^+
        short = lam - y + over  # E(d - y)^+ = E[d] - E[min(d, y)]
        cost[y] = holding * over + lost_sale * short
    return transition, cost


@functools.cache
def solve(config: InventoryConfig, lam: float) -> Solution:
    """Backward induction over the horizon for one item with constant rate ``lam``."""
    if config.n_items != 1:
        raise ValueError("the exact solution is for one item (n_items=1)")
    c, cap, m, lead = config.costs, config.capacity, config.max_order, config.lead_time
    transition, step_cost = shelf_model(lam, cap, c.holding, c.lost_sale)
    q = np.arange(m + 1)
    order_cost = c.order_fixed * (q > 0) + c.order_unit * q
    value = np.zeros((cap + 1,) + (m + 1,) * lead)
    orders = []
    for _ in range(config.horizon):
        ahead = np.tensordot(transition, value, axes=(1, 0))  # (y, p_1.., q) or (y,)
        if lead == 0:
            # shelve min(x + q, C) now: choose q for each x
            shelved = np.minimum(np.arange(cap + 1)[:, None] + q, cap)  # (x, q)
            total = order_cost + step_cost[shelved] + ahead[shelved]
            orders.append(total.argmin(axis=1))
            value = total.min(axis=1)
            continue
        choice = ahead + order_cost  # q is the last axis
        orders.append(choice.argmin(axis=-1))
        best = step_cost.reshape((cap + 1,) + (1,) * (lead - 1)) + choice.min(axis=-1)
        shelved = np.minimum(np.arange(cap + 1)[:, None] + q, cap)  # (x, p_0)
        value = best[shelved]  # (x, p_0, p_1 .. p_{L-1})
    return Solution(np.array(orders[::-1]), value, lead, cap)
