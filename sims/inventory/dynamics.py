"""One step of stock and orders, and the observation, for a batch of warehouses.

The single env calls these with a batch of one, the batched env with all of its
warehouses: both give bit-identical transitions (integer arithmetic, and costs that
are products and sums of the same numbers in the same order).

A step, for every item: the order is placed (ordering cost); the pipeline's head
arrives (with ``lead_time = 0`` the order itself) and is shelved up to ``capacity``;
the step's demand is served from the shelf, what finds it empty is lost (lost-sales
cost); what remains is held (holding cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sims.inventory.config import InventoryConfig

REWARD_COMPONENTS = ("holding", "ordering", "lost_sales")


@dataclass(frozen=True)
class Outcome:
    """What a step did, per warehouse (B,) or per warehouse and item (B, K)."""

    stock: np.ndarray  # (B, K) on hand after the step
    pipeline: np.ndarray  # (B, K, L) after the step
    sold: np.ndarray  # (B, K)
    lost: np.ndarray  # (B, K) demand that found the shelf empty
    parts: dict[str, np.ndarray]  # reward component -> (B,) (costs, as negative rewards)

    @property
    def reward(self) -> np.ndarray:
        return self.parts["holding"] + self.parts["ordering"] + self.parts["lost_sales"]


def step(
    config: InventoryConfig,
    stock: np.ndarray,
    pipeline: np.ndarray,
    orders: np.ndarray,
    demand: np.ndarray,
) -> Outcome:
    """Apply ``orders`` (B, K) and this step's ``demand`` (B, K) to a batch."""
    orders = np.clip(orders, 0, config.max_order).astype(np.int64)
    if config.lead_time == 0:
        arriving, pipeline = orders, pipeline
    else:
        arriving = pipeline[:, :, 0]
        pipeline = np.concatenate([pipeline[:, :, 1:], orders[:, :, None]], axis=2)
    shelved = np.minimum(stock + arriving, config.capacity)
    sold = np.minimum(shelved, demand)
    lost = demand - sold
    stock = shelved - sold
    c = config.costs
    placed = (orders > 0).astype(np.float64)
    parts = {
        "holding": -(c.holding * stock).sum(axis=1),
        "ordering": -(c.order_fixed * placed + c.order_unit * orders).sum(axis=1),
        "lost_sales": -(c.lost_sale * lost).sum(axis=1),
    }
    return Outcome(stock, pipeline, sold, lost, parts)


def observe(
    config: InventoryConfig,
    stock: np.ndarray,
    pipeline: np.ndarray,
    forecast: np.ndarray,
) -> np.ndarray:
    """(B, D) float32 in [0, 1]: stock / capacity (K), pipeline / max_order (K x L,
    item-major), forecast / max_order (K x (L + 1): expected demand of this step and the
    next L, item-major). No clock: stock and demand carry on past an episode's end, so
    the task is a continuing one that episodes only cut into pieces."""
    b = len(stock)
    parts = [
        stock / config.capacity,
        pipeline.reshape(b, -1) / config.max_order,
        forecast.reshape(b, -1) / config.max_order,
    ]
    return np.clip(np.concatenate(parts, axis=1), 0.0, 1.0).astype(np.float32)


def unobserve(config: InventoryConfig, obs: np.ndarray):
    """``(stock (K,), pipeline (K, L), forecast (K, L + 1))`` back from one observation
    (stock and pipeline exactly: they are integers)."""
    k, lead = config.n_items, config.lead_time
    obs = np.asarray(obs, dtype=np.float64)
    if obs.shape != (config.observation_size,):
        raise ValueError(f"expected an observation of shape ({config.observation_size},)")
    stock = np.rint(obs[:k] * config.capacity).astype(np.int64)
    cut = k + k * lead
    pipeline = np.rint(obs[k:cut] * config.max_order).astype(np.int64).reshape(k, lead)
    forecast = (obs[cut : cut + k * (lead + 1)] * config.max_order).reshape(k, lead + 1)
    return stock, pipeline, forecast
