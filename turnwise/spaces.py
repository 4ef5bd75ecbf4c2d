"""Gymnasium spaces to and from plain JSON, for checkpoint manifests, the simulator
protocol and serving: ``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary``, and
``Dict`` and ``Tuple`` of those.

>>> from gymnasium import spaces
>>> space = spaces.Dict({"grid": spaces.Box(0, 1, (3, 3)), "item": spaces.Discrete(4)})
>>> space_from_json(space_to_json(space)) == space
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "shape": list(space.shape)}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[k, space_to_json(s)] for k, s in space.spaces.items()]}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise TypeError(f"unsupported space {space}")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        return spaces.Box(
            np.array(data["low"], dtype=dtype), np.array(data["high"], dtype=dtype), dtype=dtype
        )
    if kind == "MultiDiscrete":
        dtype = np.dtype(data.get("dtype", "int64"))
        return spaces.MultiDiscrete(
            np.array(data["nvec"], dtype=dtype), dtype=dtype, start=np.array(data["start"], dtype)
        )
    if kind == "MultiBinary":
        shape = data["shape"]
        return spaces.MultiBinary(shape[0] if len(shape) == 1 else shape)
    if kind == "Dict":
        return spaces.Dict([(key, space_from_json(sub)) for key, sub in data["spaces"]])  # in order
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(sub) for sub in data["spaces"]])
    raise ValueError(f"unsupported space description {data!r}")
