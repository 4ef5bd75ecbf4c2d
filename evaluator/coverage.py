"""State keys for coverage: the env's own, or a fixed discretisation of observations.

An env that declares ``state_key()`` (Warehouse-v0: the robot's cell and what it
carries) is counted in its own keys. Any other env's observation is flattened with
Gymnasium's space utilities and each of its numbers cut into ``BINS`` equal bins:
over ``[low, high]`` where the space bounds that number, else over ``0.5 + 0.5 *
tanh(x)`` (the real line squashed into (0, 1)). The key is the tuple of bins. The
cells depend only on the space, so every evaluation of a run, and every run on the
same env, counts states the same way.

>>> from gymnasium import spaces
>>> cells = ObservationCells(spaces.Box(-1.0, 1.0, (2,)))
>>> cells(np.array([-1.0, 0.05])) == bytes([0, 5])
True
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import gymnasium
import numpy as np
from gymnasium import spaces

from sims.declarations import declarations

BINS = 10

# (the unwrapped env, its observation) -> the state's key
StateKey = Callable[[object, object], Hashable]


class ObservationCells:
    """The documented discretisation of one observation space (see module docstring)."""

    def __init__(self, space: spaces.Space) -> None:
        self.space = space
        flat = spaces.flatten_space(space)
        low = np.asarray(flat.low, dtype=np.float64)
        high = np.asarray(flat.high, dtype=np.float64)
        self.bounded = np.isfinite(low) & np.isfinite(high) & (high > low)
        self.low = np.where(self.bounded, low, 0.0)
        self.span = np.where(self.bounded, high - low, 1.0)

    def __call__(self, obs: object) -> bytes:
        x = np.asarray(spaces.flatten(self.space, obs), dtype=np.float64)
        unit = np.where(self.bounded, (x - self.low) / self.span, 0.5 + 0.5 * np.tanh(x))
        cells = np.clip(np.floor(unit * BINS), 0, BINS - 1).astype(np.uint8)
        return cells.tobytes()


def state_key_function(env: gymnasium.Env) -> StateKey:
    """How states of this env are keyed for coverage: its declared key, else cells."""
    if declarations(env).state_key:
        return lambda base, obs: base.state_key()
    cells = ObservationCells(env.observation_space)
    return lambda base, obs: cells(obs)
