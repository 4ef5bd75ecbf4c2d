"""Observations of any space as the policy's flat float vectors, a batch at a time.

``encode(space, batch)`` equals ``gymnasium.spaces.flatten`` row by row (tested), for
``Box`` of any shape, ``Discrete`` and ``MultiDiscrete`` (one-hot), ``MultiBinary``,
``Dict`` and ``Tuple`` of those. A ``Dict``'s ``action_mask`` part is the env's
legal-action mask (Gymnasium's convention), not an input: it is left out here and
read by :func:`mask_from`.

>>> import numpy as np
>>> from gymnasium import spaces
>>> space = spaces.Dict({"pos": spaces.Box(0, 1, (2,)), "item": spaces.Discrete(3)})
>>> encode(space, {"pos": np.zeros((1, 2)), "item": np.array([2])})
array([[0., 0., 1., 0., 0.]], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

MASK_KEY = "action_mask"


def policy_space(space: spaces.Space) -> spaces.Space:
    """The part of an observation space the policy reads (a Dict without its mask)."""
    if isinstance(space, spaces.Dict) and MASK_KEY in space.spaces:
        return spaces.Dict({k: v for k, v in space.spaces.items() if k != MASK_KEY})
    return space


def flat_size(space: spaces.Space) -> int:
    return int(spaces.flatdim(policy_space(space)))


def encode(space: spaces.Space, batch: Any) -> np.ndarray:
    """A batch of observations (N leading rows per leaf) as (N, flat_size) float32."""
    return _encode(policy_space(space), batch).astype(np.float32, copy=False)


def _encode(space: spaces.Space, batch: Any) -> np.ndarray:
    if isinstance(space, spaces.Box | spaces.MultiBinary):
        array = np.asarray(batch)
        return array.reshape(len(array), -1).astype(np.float32)
    if isinstance(space, spaces.Discrete):
        index = np.asarray(batch, dtype=np.int64).reshape(-1) - int(space.start)
        return _one_hot(index, int(space.n))
    if isinstance(space, spaces.MultiDiscrete):
        index = np.asarray(batch, dtype=np.int64)
        index = index.reshape(len(index), -1) - space.start.reshape(-1)
        sizes = space.nvec.reshape(-1)
        return np.concatenate([_one_hot(index[:, i], int(n)) for i, n in enumerate(sizes)], 1)
    if isinstance(space, spaces.Dict):
        return np.concatenate([_encode(sub, batch[key]) for key, sub in space.spaces.items()], 1)
    if isinstance(space, spaces.Tuple):
        return np.concatenate(
            [_encode(sub, part) for sub, part in zip(space, batch, strict=True)], 1
        )
    raise TypeError(f"unsupported observation space {space}")


def _one_hot(index: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((len(index), size), dtype=np.float32)
    out[np.arange(len(index)), index] = 1.0
    return out


def mask_from(space: spaces.Space, batch: Any, info: dict[str, Any]) -> np.ndarray | None:
    """The legal-action mask (N, n) bool of a batch: the observation's ``action_mask``
    part where the space has one, else ``info["action_mask"]``, else None (all legal)."""
    if isinstance(space, spaces.Dict) and MASK_KEY in space.spaces:
        return np.asarray(batch[MASK_KEY], dtype=bool)
    if MASK_KEY in info:
        return np.asarray(info[MASK_KEY], dtype=bool)
    return None


def stack(space: spaces.Space, observations: list[Any]) -> Any:
    """Single observations as one batch in the space's structure (rows first)."""
    if isinstance(space, spaces.Dict):
        return {k: stack(sub, [o[k] for o in observations]) for k, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(stack(sub, [o[i] for o in observations]) for i, sub in enumerate(space))
    return np.stack([np.asarray(o) for o in observations])
