"""What the visitation pictures need: small row fields, and each layout redrawn.

Two fields of an evaluation row (``evaluations.jsonl``), kept small:

- ``visitation_episodes`` (grid envs, whose state keys start with ``row, col``): the
  first :data:`PANELS` episodes, each with its seed, return, length, success and its
  visits per grid cell: one picture per layout, since every seed draws its own.
- ``visitation_cells`` (envs counted in cells of the observation discretisation,
  ``evaluator/coverage.py``): visits per bin of each observation number, summed over
  the episodes, ``D x BINS`` counts; null beyond :data:`MAX_CELL_NUMBERS` numbers.

For the report, :func:`layout_frames` recreates each episode's layout through the env,
``reset(seed=...)`` then its ``rgb_array`` render, and :func:`paint` colours the floor of
that frame by visits. A grid env is drawn on when its ``metadata`` gives
``render_cell_pixels``, the side in pixels of one cell of its frame (cell ``(r, c)`` at
``[r * s:(r + 1) * s, c * s:(c + 1) * s]``); ``render_legend`` (name -> RGB) names its
colours.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from evaluator.coverage import BINS, ObservationCells
from evaluator.episodes import Episode
from sims.declarations import Declarations
from turnwise.config import EnvConfig, SimulatorConfig, env_config_from_dict

PANELS = 6  # episodes whose visit grids a row keeps, one picture each
MAX_CELL_NUMBERS = 64  # observation numbers up to which a row keeps bin counts

# shares of visits (n,) -> their colours (n, 3) uint8
Colors = Callable[[np.ndarray], np.ndarray]


class LayoutUnavailable(Exception):
    """The env cannot redraw its layouts (no in-process env, no rgb_array render)."""


@dataclass(frozen=True)
class Layouts:
    """Each evaluation seed's first frame, and how the frames draw the grid."""

    frames: dict[int, np.ndarray]  # seed -> (H * cell, W * cell, 3) uint8
    cell: int  # pixels per grid cell
    legend: dict[str, tuple[int, int, int]]  # colour name -> RGB


# -- row fields (the evaluator) ------------------------------------------------------
def visitation_fields(episodes: Sequence[Episode], declared: Declarations) -> dict[str, Any]:
    """The row fields the pictures draw from (see the module docstring)."""
    return {
        "visitation_episodes": episode_grids(episodes[:PANELS]) if declared.grid else None,
        "visitation_cells": None if declared.state_key else cell_counts(episodes),
    }


def episode_grids(episodes: Sequence[Episode]) -> list[dict[str, Any]]:
    """Seed, return, length, success and visits per (row, col) of each episode, the
    grids of one shape (the largest cell any of them visited)."""
    keys = [key for e in episodes for key in e.visits]
    if not keys:
        return []
    shape = (max(int(k[0]) for k in keys) + 1, max(int(k[1]) for k in keys) + 1)
    return [
        {
            "seed": e.seed,
            "return": e.total_return,
            "length": e.length,
            "success": e.success,
            "grid": _grid(e.visits, shape).tolist(),
        }
        for e in episodes
    ]


def _grid(visits: Counter, shape: tuple[int, int]) -> np.ndarray:
    grid = np.zeros(shape, dtype=np.int64)
    for key, n in visits.items():
        grid[int(key[0]), int(key[1])] += n
    return grid


def cell_counts(episodes: Sequence[Episode]) -> dict[str, Any] | None:
    """Visits per bin of each observation number (keys are ``ObservationCells`` bytes)."""
    total = sum((e.visits for e in episodes), Counter())
    if not total or not all(isinstance(k, bytes) for k in total):
        return None
    numbers = len(next(iter(total)))
    if numbers > MAX_CELL_NUMBERS:
        return None
    counts = np.zeros((numbers, BINS), dtype=np.int64)
    for key, n in total.items():
        counts[np.arange(numbers), np.frombuffer(key, dtype=np.uint8)] += n
    return {"bins": BINS, "counts": counts.tolist()}


# -- pictures (the report) -------------------------------------------------------------
def evaluation_env_of(run_dir: Path) -> EnvConfig:
    """The env the run's evaluator used (``config.json``), made in-process here."""
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        env = env_config_from_dict(config["env"])
        fixed = env_config_from_dict(config.get("evaluator", {}).get("env", {"id": ""}))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LayoutUnavailable(f"no env config in {run_dir / 'config.json'}: {error}") from error
    return dataclasses.replace(fixed if fixed.id else env, simulator=SimulatorConfig())


def layout_frames(config: EnvConfig, seeds: Sequence[int]) -> Layouts:
    """Each seed's layout as the env draws it right after ``reset(seed=seed)``."""
    from actors.envs import make_env

    try:
        env = make_env(config, render_mode="rgb_array")
    except Exception as error:  # a user's env may fail in any way: the picture goes on
        raise LayoutUnavailable(f"cannot make {config.id} here: {error}") from error
    try:
        metadata = env.metadata
        cell = metadata.get("render_cell_pixels")
        if "rgb_array" not in metadata.get("render_modes", ()) or not isinstance(cell, int):
            raise LayoutUnavailable(f"{config.id} declares no rgb_array grid render")
        frames = {}
        for seed in seeds:
            env.reset(seed=seed)
            frames[seed] = np.asarray(env.render(), dtype=np.uint8)
        return Layouts(frames, cell, dict(metadata.get("render_legend", {})))
    finally:
        env.close()


def paint(frame: np.ndarray, cell: int, shares: np.ndarray, colors: Colors) -> np.ndarray:
    """``frame`` with the floor (its most common colour) of every visited cell painted
    in the colour of that cell's share of visits; everything else drawn as it was."""
    rows, cols = frame.shape[0] // cell, frame.shape[1] // cell
    padded = np.zeros((rows, cols))
    shares = np.asarray(shares, dtype=float)[:rows, :cols]
    padded[: shares.shape[0], : shares.shape[1]] = shares
    per_pixel = np.zeros(frame.shape[:2])
    per_pixel[: rows * cell, : cols * cell] = np.kron(padded, np.ones((cell, cell)))
    painted = frame.copy()
    hot = _floor(frame) & (per_pixel > 0)
    painted[hot] = colors(per_pixel[hot])
    return painted


def _floor(frame: np.ndarray) -> np.ndarray:
    packed = frame[..., 0].astype(np.int64) << 16 | frame[..., 1].astype(np.int64) << 8
    packed |= frame[..., 2]
    values, counts = np.unique(packed, return_counts=True)
    return packed == values[np.argmax(counts)]


def cell_labels(space: spaces.Space | None, numbers: int) -> list[str]:
    """One label per observation number: its index and the range its bins cut."""
    if space is None:
        return [f"obs[{i}]" for i in range(numbers)]
    cells = ObservationCells(space)
    return [
        f"obs[{i}] [{low:.3g}, {low + span:.3g}]" if bounded else f"obs[{i}] unbounded (tanh)"
        for i, (bounded, low, span) in enumerate(
            zip(cells.bounded, cells.low, cells.span, strict=True)
        )
    ]


def observation_space(config: EnvConfig) -> spaces.Space | None:
    """The env's observation space, or None where the env cannot be made here."""
    from actors.envs import make_env

    try:
        env = make_env(config)
    except Exception:  # labels fall back to plain indices
        return None
    try:
        return env.observation_space
    finally:
        env.close()
