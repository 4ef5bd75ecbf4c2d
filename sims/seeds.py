"""Seeds of a batched env's ``reset(seed=...)``, shared by the NumPy vector envs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def per_env_seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    """One seed per env: ``seed + i`` for an int (Gymnasium's vector convention), a
    sequence as given (its length must be ``n``), or None for every env.

    >>> per_env_seeds(5, 3), per_env_seeds(None, 2), per_env_seeds([1, None], 2)
    ([5, 6, 7], [None, None], [1, None])
    """
    if seed is None:
        return [None] * n
    if isinstance(seed, int | np.integer):
        return [int(seed) + i for i in range(n)]
    if len(seed) != n:
        raise ValueError(f"expected {n} seeds, got {len(seed)}")
    return list(seed)
