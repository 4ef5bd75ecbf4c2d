"""Pictures of one warehouse: the ``ansi`` (text) and ``rgb_array`` renders.

Text: one character per cell, ``#`` a pillar, ``.`` floor, ``D`` the drop-off, ``a``,
``b``, ... the shelves of items 0, 1, ...; the robot is ``R`` with empty hands, ``A``,
``B``, ... while it carries item 0, 1, ...

Image: an ``(H * CELL, W * CELL, 3)`` uint8 array drawn with NumPy, cell ``(r, c)`` at
pixels ``[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL]``: white floor with light grid
lines, a dark wall around the grid, grey pillars, a green drop-off, one coloured shelf per
item, and the robot as a black disk with the colour of the item it carries inside.
"""

from __future__ import annotations

import numpy as np

from sims.warehouse.layout import Shift

CELL = 32  # pixels per grid cell
FLOOR = (255, 255, 255)
GRID_LINE = (222, 222, 222)
WALL = (40, 40, 40)
PILLAR = (110, 110, 110)
DROPOFF = (44, 160, 44)
ROBOT = (15, 15, 15)
# one colour per item type (cycled beyond eight): none of them the heatmap's yellow-red
ITEM_COLORS = (
    (31, 119, 180),
    (148, 103, 189),
    (23, 190, 207),
    (227, 119, 194),
    (140, 86, 75),
    (188, 189, 34),
    (0, 0, 128),
    (0, 128, 128),
)
WALL_PIXELS = 3


def item_color(item: int) -> tuple[int, int, int]:
    return ITEM_COLORS[item % len(ITEM_COLORS)]


def legend(n_items: int) -> dict[str, tuple[int, int, int]]:
    """What each colour of :func:`rgb_frame` means (name -> RGB)."""
    names = {"wall": WALL, "pillar": PILLAR, "drop-off": DROPOFF, "robot": ROBOT}
    return names | {f"shelf of item {k}": item_color(k) for k in range(n_items)}


def text_frame(shift: Shift, robot: tuple[int, int], carrying: int) -> str:
    """The warehouse as text, one line per row (legend in the module docstring)."""
    grid = np.where(shift.obstacles, "#", ".").astype(object)
    grid[shift.dropoff] = "D"
    for k, (r, c) in enumerate(shift.shelves):
        grid[r, c] = chr(ord("a") + k)
    grid[robot] = "R" if carrying == 0 else chr(ord("A") + carrying - 1)
    return "\n".join("".join(row) for row in grid) + "\n"


def rgb_frame(shift: Shift, robot: tuple[int, int], carrying: int) -> np.ndarray:
    """The warehouse as an RGB image (layout in the module docstring)."""
    height, width = shift.obstacles.shape
    image = np.empty((height * CELL, width * CELL, 3), dtype=np.uint8)
    image[:] = FLOOR
    image[::CELL, :] = GRID_LINE
    image[:, ::CELL] = GRID_LINE
    for r, c in np.argwhere(shift.obstacles):
        _square(image, (r, c), 0, PILLAR)
    _square(image, shift.dropoff, 3, DROPOFF)
    for k, cell in enumerate(shift.shelves):
        _square(image, tuple(cell), 6, item_color(k))
    _disk(image, robot, 0.34 * CELL, ROBOT)
    if carrying:
        _square(image, robot, CELL // 2 - 5, item_color(carrying - 1))
    _walls(image)
    return image


def _square(image: np.ndarray, cell: tuple[int, int], inset: int, color) -> None:
    top, left = int(cell[0]) * CELL + inset, int(cell[1]) * CELL + inset
    image[top : top + CELL - 2 * inset, left : left + CELL - 2 * inset] = color


def _disk(image: np.ndarray, cell: tuple[int, int], radius: float, color) -> None:
    rows, cols = np.ogrid[:CELL, :CELL]
    centre = (CELL - 1) / 2
    inside = (rows - centre) ** 2 + (cols - centre) ** 2 <= radius**2
    top, left = int(cell[0]) * CELL, int(cell[1]) * CELL
    image[top : top + CELL, left : left + CELL][inside] = color


def _walls(image: np.ndarray) -> None:
    w = WALL_PIXELS
    image[:w], image[-w:], image[:, :w], image[:, -w:] = WALL, WALL, WALL, WALL
