"""Advantage estimators over time-major (T, B) arrays: GAE and V-trace.

Both scan backwards over time and are vectorized over envs. ``next_values[t]`` is
the value of the observation after step ``t``: ``values[t + 1]`` inside an episode,
the bootstrap value where an episode was truncated or the fragment ends, and 0
where it terminated. ``ends[t]`` is True where an episode ended at step ``t``
(terminated or truncated), which cuts the recursion.
"""

from __future__ import annotations

import torch


def discounted_scan(deltas: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """``out[t] = deltas[t] + carry[t] * out[t + 1]`` backwards over time (T, B)."""
    out = torch.zeros_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(len(deltas) - 1, -1, -1):
        running = deltas[t] + carry[t] * running
        out[t] = running
    return out


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    ends: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalized advantage estimates (T, B)."""
    deltas = rewards + gamma * next_values - values
    return discounted_scan(deltas, (1.0 - ends.float()) * gamma * lam)


def vtrace(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    ends: torch.Tensor,
    log_rhos: torch.Tensor,
    gamma: float,
    lam: float,
    rho_clip: float = 1.0,
    c_clip: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace targets ``vs`` (T, B) and advantages ``vs - values`` (Espeholt et al. 2018,
    with lambda). ``log_rhos`` = log pi(a|s) - log mu(a|s). With rho = 1 (on-policy)
    the advantages equal :func:`gae`'s."""
    rhos = torch.exp(log_rhos)
    clipped_rhos = torch.clamp(rhos, max=rho_clip)
    cs = lam * torch.clamp(rhos, max=c_clip)
    deltas = clipped_rhos * (rewards + gamma * next_values - values)
    corrections = discounted_scan(deltas, (1.0 - ends.float()) * gamma * cs)
    return values + corrections, corrections
