"""PPO over Arrow transition batches, with V-trace correction for lagged data.

A memoryless (mlp) policy trains on minibatches of rows. A recurrent one trains on whole
time-major fragments (truncated back-propagation through time over each fragment):
every pass unrolls the core from the fragment's logged initial state (the batch's
``state`` column), zeroing it where an episode starts inside the fragment, and a
minibatch is a group of envs, whole sequences (``minibatch_size`` rows rounded to whole
envs, at least one).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from gymnasium import spaces

from learner.returns import gae, vtrace
from turnwise.config import PPOConfig
from turnwise.policy import numpy_weights, policy_from_config
from turnwise.schema import column_matrix, column_numpy


def _rows(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """(T, B, ...) as (T * B, ...)."""
    return None if tensor is None else tensor.reshape(-1, *tensor.shape[2:])


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Rollout:
    """A batch as time-major (T, B) tensors on the learner's device."""

    obs: torch.Tensor  # (T, B, D) flat raw observations
    actions: torch.Tensor  # (T, B) or (T, B, A): the logged (policy) actions
    mask: torch.Tensor | None  # (T, B, M) legal actions, where the env supplies them
    rewards: torch.Tensor
    ends: torch.Tensor  # terminated | truncated
    terminated: torch.Tensor
    behaviour_logp: torch.Tensor
    policy_version: torch.Tensor
    bootstrap_obs: torch.Tensor  # (K, D) rows of bootstrap_obs that are present
    bootstrap_index: torch.Tensor  # (K,) flat row index of each
    starts: torch.Tensor  # (T, B) an episode starts at this row (step 0)
    state: torch.Tensor | None  # (B, S) the recurrent state before t=0 (recurrent only)


def to_rollout(batch: pa.RecordBatch, device: torch.device) -> Rollout:
    """Zero-copy from Arrow to NumPy to torch, then one copy to the device."""
    envs = int(column_numpy(batch, "env_index").max()) + 1
    steps = batch.num_rows // envs
    if steps * envs != batch.num_rows:
        raise ValueError(f"batch of {batch.num_rows} rows is not time-major over {envs} envs")

    def tensor(name: str, dtype=None) -> torch.Tensor:
        column = batch.schema.field(name).type
        array = (column_matrix if pa.types.is_fixed_size_list(column) else column_numpy)(
            batch, name
        )
        return torch.from_numpy(array).to(device, dtype).reshape(steps, envs, *array.shape[1:])

    with warnings.catch_warnings():  # Arrow's buffers are read-only; torch only reads them
        warnings.simplefilter("ignore", UserWarning)
        obs = torch.from_numpy(column_matrix(batch, "obs")).to(device)
    bootstrap = batch.column("bootstrap_obs")
    present = np.flatnonzero(bootstrap.is_valid().to_numpy(zero_copy_only=False))
    bootstrap_obs = torch.from_numpy(column_matrix(batch.take(present), "bootstrap_obs"))
    terminated = tensor("terminated")
    state = None
    if "state" in batch.schema.names:  # present on the t=0 rows, the first ``envs``
        state = torch.from_numpy(column_matrix(batch.slice(0, envs), "state").copy())
    return Rollout(
        obs=obs.reshape(steps, envs, -1),
        actions=tensor("action"),
        mask=tensor("action_mask") if "action_mask" in batch.schema.names else None,
        rewards=tensor("reward", torch.float32),
        ends=terminated | tensor("truncated"),
        terminated=terminated,
        behaviour_logp=tensor("logp", torch.float32),
        policy_version=tensor("policy_version"),
        bootstrap_obs=bootstrap_obs.to(device),
        bootstrap_index=torch.from_numpy(present).to(device),
        starts=tensor("step") == 0,
        state=None if state is None else state.to(device),
    )


class PPOLearner:
    """``update(batch)`` consumes one Arrow batch; ``weights()`` publishes the policy."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        config: PPOConfig,
        device: str = "auto",
    ) -> None:
        self.config = config
        self.device = pick_device(device)
        if self.device.type == "cpu" and config.cpu_threads > 0:
            torch.set_num_threads(config.cpu_threads)  # the learner owns its process
        self.model = policy_from_config(observation_space, action_space, config).to(self.device)
        # fused: one kernel for all parameters (within float rounding of the per-tensor
        # loop, 5-7% of a Warehouse-v0 update on CPU)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, eps=1e-5, fused=True
        )
        self.version = 0

    def anneal(self, progress: float) -> None:
        """Set the learning rate for a run ``progress`` (0..1) of the way through its
        env-step budget: ``lr`` throughout (constant), or ``lr * (1 - progress)``."""
        scale = 1.0 if self.config.lr_schedule == "constant" else max(1.0 - progress, 0.0)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * scale

    def weights(self) -> tuple[int, dict[str, np.ndarray]]:
        return self.version, numpy_weights(self.model)

    def update(self, batch: pa.RecordBatch) -> dict[str, float]:
        data = to_rollout(batch, self.device)
        steps, envs, _ = data.obs.shape
        self.model.normalizer.update(data.obs.reshape(steps * envs, -1))
        targets, advantages, log_rhos = self._targets(data)
        stats = self._optimize(data, targets, advantages)
        self.version += 1
        lag = (self.version - 1 - data.policy_version).float()
        stats.update(
            policy_lag=float(lag.mean()),
            importance_weight=float(torch.exp(log_rhos).mean()),
            value_target=float(targets.mean()),
        )
        return stats

    @torch.no_grad()
    def _targets(self, data: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        steps, envs, obs_size = data.obs.shape
        if self.model.recurrent:
            logp, values, boot = self._sequence_values(data)
        else:
            dist, values = self.model.distribution(data.obs.reshape(-1, obs_size), _rows(data.mask))
            logp = dist.log_prob(_rows(data.actions))
            boot = (
                self.model.distribution(data.bootstrap_obs)[1] if len(data.bootstrap_obs) else None
            )
        log_rhos = logp - data.behaviour_logp.reshape(-1)
        log_rhos = log_rhos.reshape(steps, envs)
        values = values.reshape(steps, envs)
        next_values = torch.zeros(steps * envs, device=self.device)
        next_values[: (steps - 1) * envs] = values[1:].reshape(-1)
        if boot is not None:
            next_values[data.bootstrap_index] = boot
        next_values = next_values.reshape(steps, envs)
        next_values = torch.where(data.terminated, 0.0, next_values)
        if cfg.correction == "vtrace":
            targets, advantages = vtrace(
                data.rewards,
                values,
                next_values,
                data.ends,
                log_rhos,
                cfg.gamma,
                cfg.gae_lambda,
                cfg.rho_clip,
                cfg.c_clip,
            )
        elif cfg.correction == "none":
            advantages = gae(
                data.rewards, values, next_values, data.ends, cfg.gamma, cfg.gae_lambda
            )
            targets = values + advantages
        else:
            raise ValueError(f"learner.correction must be 'vtrace' or 'none', got {cfg.correction}")
        return targets, advantages, log_rhos

    def _sequence_values(self, data: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs of the logged actions and values (T * B rows), the core's state
        carried through the fragment; and the values of the bootstrap observations, each
        read with the state after its row's step."""
        steps, envs, _ = data.obs.shape
        if data.state is None:
            raise ValueError("a recurrent policy trains on batches with a state column")
        params, values, states = self.model.unroll(
            data.obs, data.state, data.starts, every_step=True
        )
        dist = self.model.head.distribution(params.reshape(steps * envs, -1), _rows(data.mask))
        boot = None
        if len(data.bootstrap_index):
            after = states.reshape(steps * envs, -1)[data.bootstrap_index]
            boot = self.model.unroll(data.bootstrap_obs.unsqueeze(0), after)[1][0]
        return dist.log_prob(_rows(data.actions)), values.reshape(-1), boot

    def _row_minibatches(
        self, data: Rollout, targets: torch.Tensor, advantages: torch.Tensor
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of a memoryless policy's losses: minibatches of shuffled rows."""
        obs, mask = data.obs.reshape(-1, data.obs.shape[-1]), _rows(data.mask)
        actions, old_logp = _rows(data.actions), data.behaviour_logp.reshape(-1)
        targets, advantages = targets.reshape(-1), advantages.reshape(-1)
        for index in torch.randperm(len(obs), device=self.device).split(self.config.minibatch_size):
            dist, values = self.model.distribution(
                obs[index], None if mask is None else mask[index]
            )
            yield self._losses(
                dist, values, actions[index], old_logp[index], targets[index], advantages[index]
            )

    def _sequence_minibatches(
        self, data: Rollout, targets: torch.Tensor, advantages: torch.Tensor
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of a recurrent policy's losses: minibatches of shuffled envs, each
        unrolled over the whole fragment from its logged state (truncated BPTT)."""
        steps, envs, _ = data.obs.shape
        per = max(1, self.config.minibatch_size // steps)
        for index in torch.randperm(envs, device=self.device).split(per):
            params, values, _ = self.model.unroll(
                data.obs[:, index], data.state[index], data.starts[:, index]
            )
            mask = None if data.mask is None else _rows(data.mask[:, index])
            dist = self.model.head.distribution(params.reshape(-1, params.shape[-1]), mask)
            yield self._losses(
                dist,
                values.reshape(-1),
                _rows(data.actions[:, index]),
                data.behaviour_logp[:, index].reshape(-1),
                targets[:, index].reshape(-1),
                advantages[:, index].reshape(-1),
            )

    def _optimize(
        self, data: Rollout, targets: torch.Tensor, advantages: torch.Tensor
    ) -> dict[str, float]:
        cfg = self.config
        minibatches = self._sequence_minibatches if self.model.recurrent else self._row_minibatches
        totals: dict[str, float] = {}
        updates, stopped = 0, False
        for _ in range(cfg.epochs):
            for losses in minibatches(data, targets, advantages):
                if self._kl_exceeded(losses["approx_kl"]):
                    stopped = True  # this minibatch's step would move the policy too far
                    break
                self.optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                updates += 1
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + float(value.detach())
            if stopped:
                break
        stats = {key: value / max(updates, 1) for key, value in totals.items()}
        stats.update(gradient_steps=float(updates), kl_stopped=float(stopped))
        return stats

    def _kl_exceeded(self, approx_kl: torch.Tensor) -> bool:
        """Early stop (SB3's rule): the policy has moved more than 1.5 x ``target_kl``
        from the one that collected the batch; 0 turns the check off."""
        target = self.config.target_kl
        return target > 0 and float(approx_kl) > 1.5 * target

    def _losses(
        self, dist, values, actions, old_logp, targets, advantages
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        logp = dist.log_prob(actions)
        ratio = torch.exp(logp - old_logp)
        adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -torch.min(
            ratio * adv, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv
        ).mean()
        value_loss = 0.5 * ((values - targets) ** 2).mean()
        entropy = dist.entropy().mean()
        loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
        with torch.no_grad():
            approx_kl = ((ratio - 1) - torch.log(ratio)).mean()
            clip_fraction = ((ratio - 1).abs() > cfg.clip).float().mean()
        return {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": approx_kl,
            "clip_fraction": clip_fraction,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "version": self.version,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
