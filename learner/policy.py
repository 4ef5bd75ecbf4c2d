"""The actor-critic network: normalizer, policy head and value head."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical

from learner.normalizer import WindowNormalizer


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
    """Separate MLPs for the policy logits and the value, over normalized observations."""

    def __init__(
        self,
        obs_size: int,
        n_actions: int,
        hidden_sizes: Sequence[int] = (64, 64),
        normalizer_window: int = 200_000,
        normalizer_clip: float = 10.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.normalizer = WindowNormalizer(obs_size, normalizer_window, normalizer_clip, normalize)
        sizes = [obs_size, *hidden_sizes]
        self.policy = mlp(sizes, n_actions, out_gain=0.01)
        self.value = mlp(sizes, 1, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalizer(obs)
        return self.policy(x), self.value(x).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> tuple[Categorical, torch.Tensor]:
        logits, value = self(obs)
        return Categorical(logits=logits, validate_args=False), value

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, greedy: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions, their log-probs and value estimates for a batch of raw observations."""
        dist, value = self.distribution(torch.as_tensor(obs, dtype=torch.float32))
        action = dist.probs.argmax(-1) if greedy else dist.sample()
        return action.numpy(), dist.log_prob(action).numpy(), value.numpy()


def build_policy(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    hidden_sizes: Sequence[int],
    normalizer_kind: str = "window",
    normalizer_window: int = 200_000,
    normalizer_clip: float = 10.0,
) -> ActorCritic:
    if not isinstance(action_space, spaces.Discrete):
        raise TypeError(f"the PPO learner supports Discrete actions, got {action_space}")
    if normalizer_kind not in ("window", "none"):
        raise ValueError(f"normalizer.kind must be 'window' or 'none', got {normalizer_kind!r}")
    return ActorCritic(
        int(np.prod(observation_space.shape)),
        int(action_space.n),
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
