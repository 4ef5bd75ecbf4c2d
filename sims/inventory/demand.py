"""A world's persistent state and each episode's demand, drawn from generators.

The single and the batched env call these same functions, once per env when an
episode starts, so equal seeds give bit-identical worlds and demand in both. An
episode's demand path does not depend on the actions, so it is drawn whole at the
start, from its own ``demand_seed``: the per-step dynamics are then integer
arithmetic, and a logged episode is re-created from its start state and that seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sims.inventory.config import DemandRegime, InventoryConfig


@dataclass(frozen=True)
class World:
    """What carries over from one episode to the next (the persistent state)."""

    stock: np.ndarray  # (K,) int64: units on hand
    pipeline: np.ndarray  # (K, L) int64: pipeline[k, j] arrives in j + 1 steps
    level: np.ndarray  # (K,) float64: demand level
    amplitude: np.ndarray  # (K,) float64: seasonal amplitude
    phase: np.ndarray  # (K,) float64: seasonal phase, fixed per world
    clock: int  # steps since the world began (the season's position)

    def to_json(self) -> dict[str, Any]:
        """Plain Python values, as reset's info reports them and replay passes them back."""
        return {
            "stock": self.stock.tolist(),
            "pipeline": self.pipeline.tolist(),
            "level": self.level.tolist(),
            "amplitude": self.amplitude.tolist(),
            "phase": self.phase.tolist(),
            "clock": int(self.clock),
        }


PERSISTENT = ("stock", "pipeline", "level", "amplitude", "phase", "clock")


@dataclass(frozen=True)
class EpisodeDraw:
    """One episode's demand: the rates, the forecasts shown, the realized demand."""

    levels: np.ndarray  # (H + 1, K) float64: the level at each step, and after the last
    amplitudes: np.ndarray  # (H + 1, K) float64: the seasonal amplitude, likewise
    rates: np.ndarray  # (H, K) float64: the Poisson rate of each step
    forecast: np.ndarray  # (H + 1, K, L + 1): expected demand of steps t .. t + L, seen at t
    demand: np.ndarray  # (H, K) int64: realized demand


def draw_world(config: InventoryConfig, rng: np.random.Generator) -> World:
    """A new world: stock, then levels, amplitudes and phases, in that order."""
    k, d = config.n_items, config.demand
    stock = rng.integers(0, config.initial_stock_max + 1, size=k).astype(np.int64)
    level = rng.uniform(*d.level_start, size=k)
    amplitude = rng.uniform(*d.amplitude_start, size=k)
    phase = rng.uniform(0.0, 2 * np.pi, size=k)
    pipeline = np.zeros((k, config.lead_time), dtype=np.int64)
    return World(stock, pipeline, level, amplitude, phase, 0)


def world_from_json(config: InventoryConfig, state: Mapping[str, Any]) -> World:
    """A world from its reported form (``reset(options={"persistent_state": ...})``)."""
    missing = [name for name in PERSISTENT if name not in state]
    if missing:
        raise ValueError(f"persistent_state lacks {missing}; it needs {list(PERSISTENT)}")
    k, lead = config.n_items, config.lead_time
    world = World(
        stock=np.asarray(state["stock"], dtype=np.int64).reshape(k),
        pipeline=np.asarray(state["pipeline"], dtype=np.int64).reshape(k, lead),
        level=np.asarray(state["level"], dtype=np.float64).reshape(k),
        amplitude=np.asarray(state["amplitude"], dtype=np.float64).reshape(k),
        phase=np.asarray(state["phase"], dtype=np.float64).reshape(k),
        clock=int(state["clock"]),
    )
    if ((world.stock < 0) | (world.stock > config.capacity)).any():
        raise ValueError(f"persistent_state.stock must be in [0, {config.capacity}]")
    if ((world.pipeline < 0) | (world.pipeline > config.max_order)).any():
        raise ValueError(f"persistent_state.pipeline must be in [0, {config.max_order}]")
    return world


def seasonal_rate(
    regime: DemandRegime, level: np.ndarray, amplitude: np.ndarray, phase: np.ndarray, clock
) -> np.ndarray:
    """The Poisson rate at world step ``clock`` (broadcasts over leading dimensions)."""
    angle = 2 * np.pi * (np.asarray(clock, dtype=np.float64) / regime.season_period) + phase
    return level * (1.0 + amplitude * np.sin(angle))


def reflect(value: np.ndarray, low: float, high: float) -> np.ndarray:
    """``value`` mirrored back into ``[low, high]`` at whichever bound it crossed."""
    value = np.where(value > high, 2 * high - value, value)
    value = np.where(value < low, 2 * low - value, value)
    return np.clip(value, low, high)


def draw_episode(config: InventoryConfig, world: World, demand_seed: int) -> EpisodeDraw:
    """The next ``horizon`` steps of demand from ``world``'s regime: level shocks,
    amplitude shocks, then Poisson demand, from ``default_rng(demand_seed)``."""
    rng = np.random.default_rng(demand_seed)
    d, horizon, k = config.demand, config.horizon, config.n_items
    level_noise = rng.standard_normal((horizon, k))
    amplitude_noise = rng.standard_normal((horizon, k))
    levels, amplitudes = np.empty((horizon + 1, k)), np.empty((horizon + 1, k))
    levels[0], amplitudes[0] = world.level, world.amplitude
    for t in range(horizon):
        shock = 1.0 + d.trend + d.volatility * level_noise[t]
        levels[t + 1] = reflect(levels[t] * shock, *d.level_bounds)
        amplitude = amplitudes[t] + d.amplitude_volatility * amplitude_noise[t]
        amplitudes[t + 1] = reflect(amplitude, 0.0, d.amplitude_max)
    clocks = world.clock + np.arange(horizon + 1)
    rates = seasonal_rate(d, levels[:-1], amplitudes[:-1], world.phase, clocks[:-1, None])
    ahead = clocks[:, None, None] + np.arange(config.lead_time + 1)  # (H + 1, 1, L + 1)
    forecast = seasonal_rate(
        d, levels[..., None], amplitudes[..., None], world.phase[:, None], ahead
    )
    demand = rng.poisson(rates).astype(np.int64)
    return EpisodeDraw(levels, amplitudes, rates, forecast, demand)


def next_world(
    world: World, draw: EpisodeDraw, stock: np.ndarray, pipeline: np.ndarray, steps: int
) -> World:
    """The world ``steps`` steps into an episode drawn from it (the whole episode, or
    one cut short): its stock and pipeline now, the regime moved on as far."""
    return World(
        stock.copy(),
        pipeline.copy(),
        draw.levels[steps].copy(),
        draw.amplitudes[steps].copy(),
        world.phase,
        world.clock + steps,
    )


def episode_seed(rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> int:
    """The seed an episode's demand is drawn from: taken from the world's generator, or
    given in ``options["demand_seed"]`` to re-create a logged episode (the draw is made
    either way, so the generator's stream does not depend on the option)."""
    drawn = int(rng.integers(2**63))
    return int(options["demand_seed"]) if options and "demand_seed" in options else drawn
