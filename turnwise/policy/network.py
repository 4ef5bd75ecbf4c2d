"""The actor-critic network every part uses: rollout actors, learner, evaluator, serving.

Raw observations of any supported space are flattened (``observations.encode``),
normalized (``WindowNormalizer``), and read by two MLPs: a policy whose outputs
parameterize the action space's distribution (``distributions.make_head``) and a value.

With a recurrent core (``learner.model.core=lstm`` or ``gru``) the normalized
observation first passes a one-layer ``nn.LSTM``/``nn.GRU`` (time-major), and both MLPs
read its output. Its state is one flat float32 vector per env (``state_size`` wide; an
LSTM's h then c), handed in and out by the caller: ``act_recurrent`` for one step,
``unroll`` over a time-major fragment. Callers zero an env's state where its episode
starts; ``unroll`` does that itself where ``starts`` says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from turnwise.config import NORMALIZER_KINDS, POLICY_CORES, PPOConfig
from turnwise.policy.distributions import ActionHead, make_head
from turnwise.policy.normalizer import WindowNormalizer
from turnwise.policy.observations import encode, flat_size


def _sigmoid_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1."""
    return torch.sigmoid(x * 2).mul_(2).sub_(1)


class _SigmoidTanh(torch.autograd.Function):
    """tanh(x) = 2 sigmoid(2x) - 1, with tanh's own backward (1 - y^2) from the output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = _sigmoid_tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


class Tanh(nn.Module):
    """``nn.Tanh`` computed as 2 sigmoid(2x) - 1: within 2e-7 of ``torch.tanh`` and, on
    CPU, 2-2.5x faster on the learner's 2,048-4,096-row minibatches (torch's CPU tanh is
    its slowest elementwise kernel: 20% of a Warehouse-v0 update). No parameters, so
    state dicts and checkpoints are those of ``nn.Tanh``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return _SigmoidTanh.apply(x)
        return _sigmoid_tanh(x)


def mlp(sizes: Sequence[int], out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [_init(nn.Linear(a, b), np.sqrt(2)), Tanh()]
    layers.append(_init(nn.Linear(sizes[-1], out), out_gain))
    return nn.Sequential(*layers)


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def recurrent_state_size(core: str, core_size: int) -> int:
    """Width of one env's flat recurrent state: 0 (mlp), h and c (lstm), h (gru)."""
    return {"mlp": 0, "lstm": 2 * core_size, "gru": core_size}[core]


class RecurrentCore(nn.Module):
    """A one-layer LSTM or GRU over time-major (T, B, D) inputs whose state travels as
    one flat (B, state_size) tensor per batch."""

    def __init__(self, kind: str, input_size: int, size: int) -> None:
        super().__init__()
        self.kind, self.size = kind, size
        self.state_size = recurrent_state_size(kind, size)
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(input_size, size)
        for name, param in self.rnn.named_parameters():  # CleanRL's ppo_atari_lstm init
            if name.startswith("weight"):
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.zeros_(param)

    def _hidden(self, state: torch.Tensor) -> Any:
        if self.kind == "lstm":
            h, c = state.split(self.size, -1)
            return h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()
        return state.unsqueeze(0).contiguous()

    def _flat(self, hidden: Any) -> torch.Tensor:
        return torch.cat([hidden[0][0], hidden[1][0]], -1) if self.kind == "lstm" else hidden[0]

    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor,
        starts: torch.Tensor | None = None,
        every_step: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (T, B, size) from ``state`` (B, state_size), the state zeroed for env
        ``b`` before step ``t`` where ``starts[t, b]``. Returns the final state, or with
        ``every_step`` the state after every step (T, B, state_size). One ``rnn`` call per
        stretch of steps in which no env starts (one per step with ``every_step``)."""
        steps = len(x)
        if every_step:
            cuts = list(range(steps))
        elif starts is None:
            cuts = [0]
        else:
            cuts = [0, *(torch.nonzero(starts[1:].any(1)).flatten() + 1).tolist()]
        outputs, states = [], []
        for a, b in itertools.pairwise([*cuts, steps]):
            if starts is not None:
                state = torch.where(starts[a].unsqueeze(-1), 0.0, state)
            out, hidden = self.rnn(x[a:b], self._hidden(state))
            state = self._flat(hidden)
            outputs.append(out)
            states.append(state)
        return torch.cat(outputs), torch.stack(states) if every_step else state


class ActorCritic(nn.Module):
    """Separate MLPs for the action distribution's parameters and the value, over
    normalized flat observations (``obs`` below is always the flat float batch), or over
    the output of a recurrent core (``core``: mlp, lstm or gru) that reads them."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        normalizer_window: int = 200_000,
        normalizer_clip: float = 10.0,
        normalize: bool = True,
        core: str = "mlp",
        core_size: int = 64,
    ) -> None:
        super().__init__()
        self.observation_space, self.action_space = observation_space, action_space
        size = flat_size(observation_space)
        self.normalizer = WindowNormalizer(size, normalizer_window, normalizer_clip, normalize)
        self.head: ActionHead = make_head(action_space)
        self.core_kind = core
        self.core = None if core == "mlp" else RecurrentCore(core, size, core_size)
        sizes = [size if self.core is None else core_size, *hidden_sizes]
        self.policy = mlp(sizes, self.head.size, out_gain=0.01)
        self.value = mlp(sizes, 1, out_gain=1.0)

    @property
    def recurrent(self) -> bool:
        return self.core is not None

    @property
    def state_size(self) -> int:
        """Length of one env's flat float32 recurrent state (0: memoryless)."""
        return 0 if self.core is None else self.core.state_size

    def initial_state(self, n: int) -> np.ndarray:
        """The state of ``n`` envs at an episode's start: (n, state_size) zeros."""
        return np.zeros((n, self.state_size), dtype=np.float32)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.core is not None:
            raise ValueError(f"a {self.core_kind} policy needs its state: see act_recurrent")
        x = self.normalizer(obs)
        return self.policy(x), self.value(x).squeeze(-1)

    def distribution(self, obs: torch.Tensor, mask: torch.Tensor | None = None):
        params, value = self(obs)
        return self.head.distribution(params, mask), value

    def unroll(
        self,
        obs: torch.Tensor,
        state: torch.Tensor,
        starts: torch.Tensor | None = None,
        every_step: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distribution parameters (T, B, P) and values (T, B) of time-major flat ``obs``
        (T, B, D) from ``state`` (B, state_size), zeroing env ``b``'s state before step
        ``t`` where ``starts[t, b]``; and the final state (or every step's, see
        :meth:`RecurrentCore.forward`). A memoryless model passes its empty state on."""
        x = self.normalizer(obs)
        if self.core is not None:
            x, state = self.core(x, state, starts, every_step)
        elif every_step:
            state = state.expand(len(obs), *state.shape)
        return self.policy(x), self.value(x).squeeze(-1), state

    def flat(self, observations: Any) -> np.ndarray:
        """A batch of raw observations (the env's form) as the network's input."""
        return encode(self.observation_space, observations)

    def sequence_distribution(self, obs: torch.Tensor, mask: torch.Tensor | None = None):
        """The action distribution and value at every step of one episode's flat
        observations (L, D), from its start (a zero state); any core."""
        state = torch.zeros(1, self.state_size, device=obs.device)
        params, value, _ = self.unroll(obs.unsqueeze(1), state)
        return self.head.distribution(params[:, 0], mask), value[:, 0]

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray,
        mask: np.ndarray | None = None,
        greedy: bool = False,
        state: np.ndarray | None = None,
    ) -> tuple[np.ndarray, ...]:
        """Logged actions, their log-probs and values for a batch of flat observations;
        given a ``state``, :meth:`act_recurrent`'s four results."""
        if state is not None:
            return self.act_recurrent(obs, state, mask, greedy)
        mask_t = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        dist, value = self.distribution(torch.as_tensor(obs, dtype=torch.float32), mask_t)
        action = dist.mode() if greedy else dist.sample()
        return action.numpy(), dist.log_prob(action).numpy(), value.numpy()

    @torch.no_grad()
    def act_recurrent(
        self,
        obs: np.ndarray,
        state: np.ndarray,
        mask: np.ndarray | None = None,
        greedy: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One step for a batch of flat observations (n, D) from ``state`` (n, state_size),
        the state before this step (zero a row at an episode's first step): actions,
        log-probs, values and the next state. A memoryless model takes state (n, 0)."""
        if self.core is None:
            return (*self.act(obs, mask, greedy), np.zeros((len(obs), 0), dtype=np.float32))
        obs_t = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
        params, value, next_state = self.unroll(obs_t, torch.as_tensor(state, dtype=torch.float32))
        mask_t = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        dist = self.head.distribution(params[0], mask_t)
        action = dist.mode() if greedy else dist.sample()
        logp = dist.log_prob(action)
        return action.numpy(), logp.numpy(), value[0].numpy(), next_state.numpy()


def build_policy(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    hidden_sizes: Sequence[int],
    normalizer_kind: str = "window",
    normalizer_window: int = 200_000,
    normalizer_clip: float = 10.0,
    core: str = "mlp",
    core_size: int = 64,
) -> ActorCritic:
    if normalizer_kind not in NORMALIZER_KINDS:
        raise ValueError(f"normalizer.kind must be 'window' or 'none', got {normalizer_kind!r}")
    if core not in POLICY_CORES:
        raise ValueError(f"model.core must be one of {', '.join(POLICY_CORES)}, got {core!r}")
    return ActorCritic(
        observation_space,
        action_space,
        hidden_sizes,
        normalizer_window,
        normalizer_clip,
        normalize=normalizer_kind == "window",
        core=core,
        core_size=core_size,
    )


def policy_from_config(
    observation_space: spaces.Space, action_space: spaces.Space, learner: PPOConfig
) -> ActorCritic:
    """The policy ``learner`` (``PPOConfig``: widths, normalizer, model) describes."""
    norm, model = learner.normalizer, learner.model
    return build_policy(
        observation_space,
        action_space,
        learner.hidden_sizes,
        norm.kind,
        norm.window_env_steps,
        norm.clip,
        model.core,
        model.core_size,
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
    core = learner.get("model") or {}  # absent before recurrent cores: an mlp
    model = build_policy(
        space_from_json(manifest["observation_space"]),
        space_from_json(manifest["action_space"]),
        learner["hidden_sizes"],
        norm["kind"],
        norm["window_env_steps"],
        norm["clip"],
        core.get("core", "mlp"),
        core.get("core_size", 64),
    )
    model.load_state_dict(checkpoint.weights)
    return model.eval()
