"""One action distribution per action space, behind one small interface.

``make_head(action_space)`` picks the head; each head turns the policy network's
output into a distribution with ``sample()``, ``mode()``, ``log_prob(a)`` and
``entropy()``, and knows how its actions travel (``to_env``, the logged column).

==================  =================================  ===================================
space               distribution                       the logged action
==================  =================================  ===================================
``Discrete(n)``     Categorical over n logits          index 0..n-1 (env action: + start)
``MultiDiscrete``   one Categorical per dimension      indices (env action: + start)
``MultiBinary(n)``  n independent Bernoullis           the 0/1 vector, as sent
``Box``             diagonal Gaussian, state-          the unclipped sample; the env gets
                    independent log-std                it clipped to the space's bounds
==================  =================================  ===================================

The log-prob is always that of the logged action, so PPO's ratio and V-trace's
importance weights are exact. Masks (Discrete and MultiDiscrete): a masked action's
logit is set to the lowest float, so it is never sampled nor chosen greedily, and
contributes nothing to the entropy (sb3-contrib's MaskablePPO does the same).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


class CategoricalDist:
    """Independent categoricals over groups of logits (one group: Discrete)."""

    def __init__(self, logits: torch.Tensor, sizes: list[int], mask: torch.Tensor | None):
        logits = masked_logits(logits, mask)
        self.parts = [
            Categorical(logits=part, validate_args=False) for part in logits.split(sizes, -1)
        ]
        self.single = len(sizes) == 1

    def _join(self, values: list[torch.Tensor]) -> torch.Tensor:
        return values[0] if self.single else torch.stack(values, -1)

    def sample(self) -> torch.Tensor:
        return self._join([p.sample() for p in self.parts])

    def mode(self) -> torch.Tensor:
        return self._join([p.logits.argmax(-1) for p in self.parts])

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        if self.single:
            return self.parts[0].log_prob(actions)
        return sum(p.log_prob(actions[..., i]) for i, p in enumerate(self.parts))

    def entropy(self) -> torch.Tensor:
        return sum(p.entropy() for p in self.parts)

    def probs(self) -> torch.Tensor:
        return torch.cat([p.probs for p in self.parts], -1)


class IndependentDist:
    """A product of independent per-dimension distributions (Gaussian, Bernoulli)."""

    def __init__(self, dist: Normal | Bernoulli, mode: torch.Tensor):
        self.dist, self._mode = dist, mode

    def sample(self) -> torch.Tensor:
        return self.dist.sample()

    def mode(self) -> torch.Tensor:
        return self._mode

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.dist.log_prob(actions.to(self._mode.dtype)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return self.dist.entropy().sum(-1)


class ActionHead(nn.Module):
    """Base: ``size`` outputs of the policy network -> a distribution over actions."""

    size: int
    action_shape: tuple[int, ...]  # per row, as logged ((): a scalar)
    action_dtype: np.dtype
    maskable: bool = False

    def distribution(self, params: torch.Tensor, mask: torch.Tensor | None = None):
        raise NotImplementedError

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Logged actions (N, *action_shape) as the env takes them."""
        return actions


class CategoricalHead(ActionHead):
    """``Discrete`` and ``MultiDiscrete`` actions (one Categorical per dimension)."""

    maskable = True

    def __init__(self, space: spaces.Discrete | spaces.MultiDiscrete) -> None:
        super().__init__()
        if isinstance(space, spaces.Discrete):
            self.sizes, self.start, self.action_shape = [int(space.n)], np.int64(space.start), ()
        else:
            self.sizes = [int(n) for n in space.nvec.reshape(-1)]
            self.start = space.start.reshape(-1).astype(np.int64)
            self.action_shape = (len(self.sizes),)
            self.env_shape = space.shape
        self.size = sum(self.sizes)
        self.action_dtype = np.dtype(np.int64)

    def distribution(self, params, mask=None) -> CategoricalDist:
        return CategoricalDist(params, self.sizes, mask)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        env = actions.astype(np.int64) + self.start
        return env if not self.action_shape else env.reshape(len(env), *self.env_shape)


class BernoulliHead(ActionHead):
    """``MultiBinary`` actions."""

    def __init__(self, space: spaces.MultiBinary) -> None:
        super().__init__()
        self.size = int(np.prod(space.shape))
        self.action_shape, self.env_shape = (self.size,), tuple(space.shape)
        self.action_dtype = np.dtype(np.int8)

    def distribution(self, params, mask=None) -> IndependentDist:
        return IndependentDist(Bernoulli(logits=params, validate_args=False), (params > 0).float())

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions.astype(np.int8).reshape(len(actions), *self.env_shape)


class GaussianHead(ActionHead):
    """Bounded ``Box`` actions: a diagonal Gaussian with a state-independent log-std
    (CleanRL's ppo_continuous_action); the env receives the sample clipped."""

    def __init__(self, space: spaces.Box, initial_log_std: float = 0.0) -> None:
        super().__init__()
        self.size = int(np.prod(space.shape))
        self.action_shape, self.env_shape = (self.size,), tuple(space.shape)
        self.action_dtype = np.dtype(np.float32)
        self.low = space.low.reshape(-1).astype(np.float32)
        self.high = space.high.reshape(-1).astype(np.float32)
        self.env_dtype = space.dtype
        self.log_std = nn.Parameter(torch.full((self.size,), float(initial_log_std)))

    def distribution(self, params, mask=None) -> IndependentDist:
        std = self.log_std.exp().expand_as(params)
        return IndependentDist(Normal(params, std, validate_args=False), params)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        clipped = np.clip(actions, self.low, self.high).astype(self.env_dtype)
        return clipped.reshape(len(actions), *self.env_shape)


def make_head(space: spaces.Space) -> ActionHead:
    """The head for an action space; a clear error for one turnwise cannot train."""
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
        return CategoricalHead(space)
    if isinstance(space, spaces.MultiBinary):
        return BernoulliHead(space)
    if isinstance(space, spaces.Box):
        if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
            raise ValueError(f"Box actions must be bounded (finite low and high), got {space}")
        return GaussianHead(space)
    raise TypeError(
        f"unsupported action space {space}: Discrete, MultiDiscrete, MultiBinary or a bounded Box"
    )
