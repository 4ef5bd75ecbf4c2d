"""The actor-critic network every part uses: rollout actors, learner, evaluator, serving.

Raw observations of any supported space are flattened (``observations.encode``),
normalized (``WindowNormalizer``), and read by two MLPs: a policy whose outputs
parameterize the action space's distribution (``distributions.make_head``) and a value.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from turnwise.config import NORMALIZER_KINDS
from turnwise.policy.distributions import ActionHead, make_head
from turnwise.policy.normalizer import WindowNormalizer
from turnwise.policy.observations import encode, flat_size


def mlp(sizes: Sequence[int], out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [_init(nn.Linear(a, b), np.sqrt(2)), nn.Tanh()]
    layers.append(_init(nn.Linear(sizes[-1], out), out_gain))
    return nn.Sequential(*layers)


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """Separate MLPs for the action distribution's parameters and the value, over
    normalized flat observations (``obs`` below is always the flat float batch)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        normalizer_window: int = 200_000,
        normalizer_clip: float = 10.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.observation_space, self.action_space = observation_space, action_space
        size = flat_size(observation_space)
        self.normalizer = WindowNormalizer(size, normalizer_window, normalizer_clip, normalize)
        self.head: ActionHead = make_head(action_space)
        sizes = [size, *hidden_sizes]
        self.policy = mlp(sizes, self.head.size, out_gain=0.01)
        self.value = mlp(sizes, 1, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalizer(obs)
        return self.policy(x), self.value(x).squeeze(-1)

    def distribution(self, obs: torch.Tensor, mask: torch.Tensor | None = None):
        params, value = self(obs)
        return self.head.distribution(params, mask), value

    def flat(self, observations: Any) -> np.ndarray:
        """A batch of raw observations (the env's form) as the network's input."""
        return encode(self.observation_space, observations)

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, mask: np.ndarray | None = None, greedy: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logged actions, their log-probs and values for a batch of flat observations."""
        mask_t = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        dist, value = self.distribution(torch.as_tensor(obs, dtype=torch.float32), mask_t)
        action = dist.mode() if greedy else dist.sample()
        return action.numpy(), dist.log_prob(action).numpy(), value.numpy()


def build_policy(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    hidden_sizes: Sequence[int],
    normalizer_kind: str = "window",
    normalizer_window: int = 200_000,
    normalizer_clip: float = 10.0,
) -> ActorCritic:
    if normalizer_kind not in NORMALIZER_KINDS:
        raise ValueError(f"normalizer.kind must be 'window' or 'none', got {normalizer_kind!r}")
    return ActorCritic(
        observation_space,
        action_space,
        hidden_sizes,
        normalizer_window,
        normalizer_clip,
        normalize=normalizer_kind == "window",
    )


def numpy_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The state dict as NumPy arrays: cheap to ship through Ray's object store."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def load_numpy_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})


def policy_from_checkpoint(checkpoint) -> ActorCritic:
    """Rebuild the policy a checkpoint (``turnwise.checkpoint.Checkpoint``) describes."""
    from turnwise.spaces import space_from_json

    manifest = checkpoint.manifest
    learner = manifest["config"]["learner"]
    norm = learner["normalizer"]
    model = build_policy(
        space_from_json(manifest["observation_space"]),
        space_from_json(manifest["action_space"]),
        learner["hidden_sizes"],
        norm["kind"],
        norm["window_env_steps"],
        norm["clip"],
    )
    model.load_state_dict(checkpoint.weights)
    return model.eval()
