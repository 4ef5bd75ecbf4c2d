"""Baseline policies for Inventory-v0, each a function of one observation.

:class:`ReorderHeuristic` is the textbook (s, S) rule driven by the forecast in the
observation; it is a heuristic, not an optimum (the exact optimum is known only for
one item at a constant rate: :mod:`sims.inventory.optimal`). Per item, with ``IP``
the inventory position (stock on hand plus everything in transit) and ``mu`` the
forecast demand of this step and the next ``lead_time`` (all that an order placed now
must cover before the next one arrives):

- reorder point ``s``: the smallest integer with ``P(Poisson(mu) <= s) >= f``, the
  newsvendor critical ratio ``f = u / (u + (lead_time + 1) * holding)``: a unit short
  costs ``u = lost_sale - order_unit`` (it is lost, and never bought), a unit over is
  held through the ``lead_time + 1`` steps of the protection interval;
- lot: the economic order quantity ``EOQ = sqrt(2 * order_fixed * r / holding)`` at the
  forecast rate ``r = mu / (lead_time + 1)``;
- when ``IP < s``: order up to ``S = s + round(EOQ)``, at most ``max_order``; otherwise
  nothing.

Measured against the exact optimum of the single-item constant-rate case (docs/
inventory.md): 1.5-6% above the optimal cost at rates 1.5 to 7.

``heuristic`` is that rule for the default sizes, lead time and costs (those of
``+exp=inventory``, whose demand regimes it reads from the observation), named as
``evaluator.baseline=sims.inventory.baselines:heuristic``. For other sizes or costs,
build ``ReorderHeuristic(make_config(...))`` in a module of your own and name it.
"""

from __future__ import annotations

import math

import numpy as np

from sims.inventory.config import InventoryConfig, make_config
from sims.inventory.dynamics import unobserve


def poisson_quantile(mu: np.ndarray, fractile: float) -> np.ndarray:
    """Per entry, the smallest integer ``s`` with ``P(Poisson(mu) <= s) >= fractile``."""
    out = np.empty(len(mu), dtype=np.int64)
    for i, m in enumerate(np.asarray(mu, dtype=np.float64)):
        n, pmf = 0, math.exp(-m)
        cdf = pmf
        while cdf < fractile:
            n += 1
            pmf *= m / n
            cdf += pmf
        out[i] = n
    return out


class ReorderHeuristic:
    """The (s, S) rule above, for one config: ``policy(observation) -> orders``."""

    def __init__(self, config: InventoryConfig) -> None:
        self.config = config

    @property
    def fractile(self) -> float:
        costs, interval = self.config.costs, self.config.lead_time + 1
        under = costs.lost_sale - costs.order_unit
        return under / (under + interval * costs.holding)

    def levels(self, forecast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(s, S)`` per item for the forecast (K, L + 1)."""
        costs = self.config.costs
        mu = forecast.sum(axis=1)
        reorder = poisson_quantile(mu, self.fractile)
        rate = mu / forecast.shape[1]
        eoq = np.sqrt(2 * costs.order_fixed * rate / max(costs.holding, 1e-12))
        return reorder, reorder + np.rint(eoq).astype(np.int64)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        stock, pipeline, forecast = unobserve(self.config, observation)
        position = stock + pipeline.sum(axis=1)
        reorder, up_to = self.levels(forecast)
        orders = np.where(position < reorder, up_to - position, 0)
        return np.clip(orders, 0, self.config.max_order).astype(np.int64)


def constant_order(observation: np.ndarray) -> np.ndarray:
    """A naive reference: order this step's forecast demand, rounded, whatever the stock."""
    config = DEFAULT
    _, _, forecast = unobserve(config, observation)
    return np.clip(np.rint(forecast[:, 0]), 0, config.max_order).astype(np.int64)


DEFAULT = make_config()
heuristic = ReorderHeuristic(DEFAULT)
