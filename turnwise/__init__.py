"""Contracts shared by turnwise's parts: transition schema, checkpoints, run layout."""

__version__ = "0.1.0"
