"""Contracts shared by turnwise's parts (transition schema, checkpoints, run layout) and
the Python entry point, :func:`turnwise.train` (``turnwise.api``)."""

from __future__ import annotations

from typing import Any

__all__ = ["train"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``turnwise.train`` on first use: importing ``turnwise`` stays light (the
    simulator image imports it without Hydra, torch or Ray)."""
    if name == "train":
        from turnwise.api import train

        return train
    raise AttributeError(f"module 'turnwise' has no attribute {name!r}")
