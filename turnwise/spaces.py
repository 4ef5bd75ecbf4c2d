"""Gymnasium spaces to and from plain JSON, for checkpoint manifests and serving."""

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
    raise TypeError(f"unsupported space {space}")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    kind = data.get("type")
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        return spaces.Box(
            np.array(data["low"], dtype=dtype), np.array(data["high"], dtype=dtype), dtype=dtype
        )
    raise ValueError(f"unsupported space description {data!r}")
