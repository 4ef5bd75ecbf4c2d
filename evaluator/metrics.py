"""Evaluation metrics from fixed-seed episodes (pure functions, no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from evaluator.episodes import Episode
from evaluator.visitation import visitation_fields
from sims.declarations import Declarations


def action_entropy(model, episodes: Sequence[Episode]) -> float | None:
    """Mean entropy (nats) of the policy's action distribution over visited states;
    without a model (the oracle, say), the entropy of the actions it took."""
    if model is None:
        actions = [a for e in episodes for a in e.actions]
        if not all(isinstance(a, int) for a in actions):
            return None  # the entropy of taken vector actions is not estimated
        counts = np.bincount(np.asarray(actions, dtype=int))
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())
    observations = np.concatenate([e.observations for e in episodes])
    masks = None
    if all(e.masks is not None for e in episodes):
        masks = torch.as_tensor(np.concatenate([e.masks for e in episodes]))
    with torch.no_grad():
        if getattr(model, "state_size", 0):  # recurrent: each episode from its start
            return float(torch.cat([_episode_entropy(model, e) for e in episodes]).mean())
        dist, _ = model.distribution(torch.as_tensor(observations), masks)
        return float(dist.entropy().mean())


def _episode_entropy(model, episode: Episode) -> torch.Tensor:
    masks = None if episode.masks is None else torch.as_tensor(episode.masks)
    return model.sequence_distribution(torch.as_tensor(episode.observations), masks)[0].entropy()


def coverage(episodes: Sequence[Episode], seen_so_far: set | None = None) -> float:
    """Distinct states visited over states reachable, per episode (keys are per seed);
    over states seen so far where the env cannot count reachable states."""
    visited = {(e.seed, key) for e in episodes for key in e.visits}
    if all(e.reachable_states for e in episodes):
        return len(visited) / sum(e.reachable_states for e in episodes)
    seen = (seen_so_far or set()) | visited
    return len(visited) / max(len(seen), 1)


def visitation_entropy(episodes: Sequence[Episode]) -> float:
    """Entropy of the state-visitation distribution, normalized to [0, 1]."""
    counts = np.array(list(sum((e.visits for e in episodes), Counter()).values()), float)
    if len(counts) < 2:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def visitation_grid(episodes: Sequence[Episode]) -> list[list[int]] | None:
    """Visits per grid cell, for envs whose declared state keys start with (row, col)."""
    keys = [key for e in episodes for key in e.visits]
    if not keys:
        return None
    rows = max(int(k[0]) for k in keys) + 1
    cols = max(int(k[1]) for k in keys) + 1
    grid = np.zeros((rows, cols), dtype=np.int64)
    for e in episodes:
        for key, n in e.visits.items():
            grid[int(key[0]), int(key[1])] += n
    return grid.tolist()


def stall_rate(episodes: Sequence[Episode], milestones: Mapping[str, str]) -> float | None:
    """Share of episodes that collected a milestone more often than the success it
    leads to (picked but never delivered): the stall an over-shaped reward produces."""
    if not milestones:
        return None
    stalled = [
        any(
            e.component_counts.get(m, 0) > e.component_counts.get(s, 0)
            for m, s in milestones.items()
        )
        for e in episodes
    ]
    return float(np.mean(stalled))


def summarize(
    episodes: Sequence[Episode],
    model,
    baseline_return: float | None,
    declared: Declarations,
    seen_so_far: set | None = None,
) -> dict[str, Any]:
    returns = np.array([e.total_return for e in episodes])
    successes = [e.success for e in episodes if e.success is not None]
    names = sorted({name for e in episodes for name in e.components})
    mean = float(returns.mean())
    return {
        "episodes": len(episodes),
        "eval_return": mean,
        "eval_return_std": float(returns.std()),
        "eval_return_min": float(returns.min()),
        "eval_return_max": float(returns.max()),
        "baseline_return": baseline_return,
        "fraction_of_baseline": fraction_of_baseline(mean, baseline_return),
        "success_rate": float(np.mean(successes)) if successes else None,
        "episode_length": float(np.mean([e.length for e in episodes])),
        "action_entropy": action_entropy(model, episodes),
        "state_coverage": coverage(episodes, seen_so_far),
        "visited_states": len({(e.seed, key) for e in episodes for key in e.visits}),
        "visitation_entropy": visitation_entropy(episodes),
        "visitation_grid": visitation_grid(episodes) if declared.grid else None,
        **visitation_fields(episodes, declared),  # per layout / per cell: the pictures
        "reward_components": {
            n: float(np.mean([e.components.get(n, 0.0) for e in episodes])) for n in names
        },
        "milestone_without_success_rate": stall_rate(episodes, declared.milestones),
    }


def fraction_of_baseline(value: float, baseline: float | None) -> float | None:
    """How much of the baseline a return achieves: ``value / baseline`` for a positive
    baseline; for a negative one (a cost), ``2 - value / baseline``, 1 minus the excess
    cost as a share of the baseline's (1.1x the cost: 0.9; twice the cost: 0). Both are
    1.0 at the baseline and grow with the return. None for a zero or missing baseline.

    >>> fraction_of_baseline(90.0, 100.0), round(fraction_of_baseline(-110.0, -100.0), 6)
    (0.9, 0.9)
    """
    if not baseline:
        return None
    ratio = value / baseline
    return ratio if baseline > 0 else 2.0 - ratio


DIVERGENCE_WARMUP_ENV_STEPS = 400_000  # default of evaluator.divergence_warmup_env_steps:
# checkpoints before it never alert (greedy evaluation of a still stochastic policy lags
# its training return by design)
DIVERGENCE_FLOOR = 0.1  # the shortfall's scale is at least this share of |baseline return|


def divergence(
    eval_return: float,
    train_return: float | None,
    env_steps: int,
    baseline_return: float | None = None,
    warmup: int = DIVERGENCE_WARMUP_ENV_STEPS,
) -> float | None:
    """How much of the training return the evaluation keeps: ``1 - (train - eval) /
    scale`` with ``scale = max(|train|, DIVERGENCE_FLOOR * |baseline|)``. For a training
    return above the floor that is ``eval / train`` where it is positive, and one minus
    the excess cost as a share of training's where it is negative (a cost); a
    training return near zero is measured against a tenth of the baseline's. None
    during the warm-up (``env_steps < warmup``), without a finite
    training return, or with a zero scale.

    >>> divergence(8.0, 10.0, 400_000), divergence(-300.0, -200.0, 400_000)
    (0.8, 0.5)
    >>> divergence(-1.0, 0.5, 400_000, baseline_return=30.0)  # floor: 3.0, not 0.5
    0.5
    >>> divergence(-1.0, 28.0, 200_000) is None  # warm-up
    True
    """
    if env_steps < warmup:
        return None
    if train_return is None or not np.isfinite(train_return):
        return None
    floor = DIVERGENCE_FLOOR * abs(baseline_return) if baseline_return else 0.0
    scale = max(abs(train_return), floor)
    if scale == 0:
        return None
    return 1.0 - (train_return - eval_return) / scale
