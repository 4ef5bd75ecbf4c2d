"""Configuration of Inventory-v0: sizes, costs, demand regimes and their checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Costs:
    """Per-unit and per-order costs; each kind is reported as its own reward component."""

    holding: float = 0.01  # per unit on hand at the end of a step
    lost_sale: float = 0.2  # per unit of demand that finds the shelf empty
    order_fixed: float = 0.05  # per item ordered on a step (any quantity > 0)
    order_unit: float = 0.0  # per unit ordered


@dataclass(frozen=True)
class DemandRegime:
    """How the demand rate of each item moves. The rate of item k at world step n is
    ``level_k(n) * (1 + amplitude_k(n) * sin(2 pi n / season_period + phase_k))``;
    the level follows ``level *= 1 + trend + volatility * z`` and the amplitude
    ``amplitude += amplitude_volatility * z'`` (z, z' standard normal), both reflected
    into their bounds. Levels, amplitudes, phases and the world clock persist from one
    episode to the next, so the regime drifts over a run."""

    level_start: tuple[float, float] = (2.0, 4.0)  # a new world's level, uniform per item
    level_bounds: tuple[float, float] = (1.0, 7.0)  # the level is reflected into these
    trend: float = 0.0  # mean relative growth of the level per step
    volatility: float = 0.02  # std of the level's relative change per step
    amplitude_start: tuple[float, float] = (0.0, 0.2)  # a new world's seasonal amplitude
    amplitude_max: float = 0.3  # the amplitude is reflected into [0, amplitude_max]
    amplitude_volatility: float = 0.005  # std of the amplitude's change per step
    season_period: int = 52  # steps per seasonal cycle

    @property
    def static(self) -> bool:
        """The rate never changes: one constant Poisson rate per world."""
        moving = (self.trend, self.volatility, self.amplitude_volatility, self.amplitude_max)
        return all(v == 0 for v in moving)

    def problems(self, max_order: int):
        lo, hi = self.level_bounds
        if not 0 < lo <= hi:
            yield f"demand.level_bounds must satisfy 0 < low <= high, got {self.level_bounds}"
        a, b = self.level_start
        if not lo <= a <= b <= hi:
            yield f"demand.level_start {self.level_start} must lie within level_bounds"
        a, b = self.amplitude_start
        if not 0 <= a <= b <= self.amplitude_max <= 1:
            yield "demand.amplitude_start must lie within [0, amplitude_max], amplitude_max <= 1"
        if min(self.volatility, self.amplitude_volatility) < 0 or abs(self.trend) >= 1:
            yield "demand volatilities must be >= 0 and |trend| < 1"
        if self.season_period < 1:
            yield "demand.season_period must be >= 1"
        if hi * (1 + self.amplitude_max) > max_order:
            yield (
                f"the highest demand rate, level_bounds[1] * (1 + amplitude_max) = "
                f"{hi * (1 + self.amplitude_max):g}, must not exceed max_order={max_order}"
            )


# Named regimes. Training uses "train": levels wander from a narrow start, so over a run
# the population of worlds spreads from [2, 4] across [1, 7], with mild, slow seasons.
# "heldout" is what the evaluator of +exp=inventory runs: a declining market, 2.5 times
# the volatility, seasons four times as short and stronger than training ever has them,
# higher starting levels; training never sees any of these. "stationary" is one constant rate
# per world: the case whose optimum is computed exactly (sims/inventory/optimal.py).
REGIMES: dict[str, DemandRegime] = {
    "train": DemandRegime(),
    "heldout": DemandRegime(
        level_start=(3.0, 6.0),
        level_bounds=(1.0, 7.0),
        trend=-0.002,
        volatility=0.05,
        amplitude_start=(0.3, 0.5),
        amplitude_max=0.5,
        amplitude_volatility=0.02,
        season_period=13,
    ),
    "stationary": DemandRegime(
        level_start=(4.0, 4.0),
        level_bounds=(1.0, 7.0),
        trend=0.0,
        volatility=0.0,
        amplitude_start=(0.0, 0.0),
        amplitude_max=0.0,
        amplitude_volatility=0.0,
    ),
}


@dataclass(frozen=True)
class InventoryConfig:
    """One warehouse stocking ``n_items`` items, each on a shelf of ``capacity`` units."""

    n_items: int = 2  # items (SKUs)
    lead_time: int = 2  # steps from placing an order to its arrival (0: same step)
    horizon: int = 50  # steps per episode (truncation)
    capacity: int = 40  # most units of one item on hand; arrivals beyond it are lost
    max_order: int = 12  # largest order per item and step (the bounded action)
    initial_stock_max: int = 20  # a new world's stock, uniform in [0, this] per item
    costs: Costs = field(default_factory=Costs)
    demand: DemandRegime = field(default_factory=DemandRegime)

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid InventoryConfig: " + "; ".join(problems))

    def _problems(self):
        if self.n_items < 1:
            yield f"n_items must be >= 1, got {self.n_items}"
        if self.lead_time < 0:
            yield f"lead_time must be >= 0, got {self.lead_time}"
        if self.horizon < 1:
            yield f"horizon must be >= 1, got {self.horizon}"
        if self.capacity < 1 or self.max_order < 1:
            yield "capacity and max_order must be >= 1"
        if not 0 <= self.initial_stock_max <= self.capacity:
            yield "initial_stock_max must be in [0, capacity]"
        if min(dataclasses.astuple(self.costs)) < 0:
            yield "costs must be >= 0"
        if self.costs.lost_sale <= self.costs.order_unit:
            yield "costs.lost_sale must exceed costs.order_unit (else selling never pays)"
        yield from self.demand.problems(self.max_order)

    @property
    def exact(self) -> bool:
        """Single item, constant demand: the optimum is computed exactly (the oracle)."""
        return self.n_items == 1 and self.demand.static

    @property
    def observation_size(self) -> int:
        k, lead = self.n_items, self.lead_time
        return k + k * lead + k * (lead + 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _replace_checked(base: Any, overrides: Mapping[str, Any], name: str) -> Any:
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {name} key(s) {unknown}; known keys: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in overrides.items()}
    return dataclasses.replace(base, **values)


def make_config(
    regime: str = "train",
    demand: Mapping[str, Any] | None = None,
    costs: Mapping[str, float] | None = None,
    **overrides: Any,
) -> InventoryConfig:
    """A config from a named demand regime, overrides of its fields, of the costs, and
    of the sizes.

    >>> make_config("heldout", demand={"trend": 0.0}, costs={"holding": 0.02}).demand.trend
    0.0
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown demand regime {regime!r}; choose one of {sorted(REGIMES)}")
    base = InventoryConfig(demand=REGIMES[regime])
    overrides["demand"] = _replace_checked(REGIMES[regime], demand or {}, "demand")
    overrides["costs"] = _replace_checked(base.costs, costs or {}, "costs")
    return _replace_checked(base, overrides, "InventoryConfig")
