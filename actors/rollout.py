"""The rollout actor: steps K environments with a CPU copy of the policy.

A plain class (tests run it in-process); the launcher wraps it with ``ray.remote``.
``sample(weights)`` returns one time-major ``pyarrow.RecordBatch`` of
``fragment_length x envs_per_actor`` transitions in the run's schema, and appends
the same batch to the transition log.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from actors.envs import EnvInfo, describe_env, make_vector_env, replay_records
from actors.transition_log import TransitionLog, next_incarnation
from turnwise.config import ActorsConfig, EnvConfig, PPOConfig
from turnwise.policy import build_policy, encode, flat_size, load_numpy_weights, mask_from
from turnwise.schema import build_batch, nullable_fixed_list, transition_schema


def env_seeds(run_seed: int, actor_id: int, incarnation: int, num_envs: int) -> list[int]:
    """Seeds of one actor life's envs: distinct per actor, per restart and per env."""
    sequence = np.random.SeedSequence([run_seed, actor_id, incarnation])
    return [int(s) for s in sequence.generate_state(num_envs)]


class Episodes:
    """Per-env episode bookkeeping: ids, step indices, returns, replay records."""

    def __init__(self, prefix: str, num_envs: int) -> None:
        self.prefix = prefix
        self.count = np.zeros(num_envs, dtype=np.int64)
        self.step = np.zeros(num_envs, dtype=np.int64)
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.start: list[tuple[int | None, str | None]] = [(None, None)] * num_envs

    def ids(self) -> list[str]:
        return [f"{self.prefix}.{i}.{n}" for i, n in enumerate(self.count)]

    def begin(self, env: EnvInfo, reset_info: dict[str, Any], envs: np.ndarray) -> None:
        for i in envs:
            self.start[i] = replay_records(reset_info, env, int(i))

    def end(self, done: np.ndarray) -> None:
        self.count += done
        self.step = np.where(done, 0, self.step + 1)
        self.returns[done] = 0.0


class RolloutWorker:
    """Role: ``sample(weights) -> pa.RecordBatch``."""

    def __init__(
        self,
        actor_id: int,
        env: EnvConfig,
        actors: ActorsConfig,
        learner: PPOConfig,
        run_seed: int,
        run_dir: str | None,
    ) -> None:
        torch.set_num_threads(1)
        self.actor_id = actor_id
        self.fragment_length = actors.fragment_length
        self.info = describe_env(env)
        self.schema = transition_schema(
            self.info.observation_space,
            self.info.action_space,
            self.info.reward_components,
            self.info.env_id,
            self.info.version,
            action_mask=self.info.action_mask,
        )
        num_envs = actors.envs_per_actor
        incarnation = next_incarnation(run_dir, actor_id) if run_dir else int(time.time())
        seeds = env_seeds(run_seed, actor_id, incarnation, num_envs)
        self.log = None
        if run_dir:
            record = {"run_seed": run_seed, "env_seeds": seeds, "env_version": self.info.version}
            self.log = TransitionLog(run_dir, actor_id, record)
        self.envs = make_vector_env(env, num_envs, [run_seed, actor_id, incarnation])
        self.obs, reset_info = self.envs.reset(seed=seeds)
        self.mask = mask_from(self.info.observation_space, self.obs, reset_info)
        self.episodes = Episodes(f"{actor_id}.{incarnation}", num_envs)
        self.episodes.begin(self.info, reset_info, np.arange(num_envs))
        norm = learner.normalizer
        self.policy = build_policy(
            self.info.observation_space,
            self.info.action_space,
            learner.hidden_sizes,
            norm.kind,
            norm.window_env_steps,
            norm.clip,
        )
        self.policy_version = -1

    def set_weights(self, weights: tuple[int, dict[str, np.ndarray]]) -> None:
        version, state = weights
        if version != self.policy_version:
            load_numpy_weights(self.policy, state)
            self.policy_version = version

    def sample(self, weights: tuple[int, dict[str, np.ndarray]] | None = None) -> pa.RecordBatch:
        if weights is not None:
            self.set_weights(weights)
        columns = self._collect()
        batch = build_batch(self.schema, columns)
        if self.log is not None:
            self.log.append(batch)
        return batch

    def ping(self) -> int:
        return self.actor_id

    def _collect(self) -> dict[str, Any]:
        steps, num_envs = self.fragment_length, self.envs.num_envs
        space = self.info.observation_space
        obs_size = flat_size(space)
        rec: dict[str, list] = {k: [] for k in _PER_STEP}
        if self.info.action_mask:
            rec["action_mask"] = []
        rec.update({f"reward_{c}": [] for c in self.info.reward_components})
        boot = np.zeros((steps, num_envs, obs_size), dtype=np.float32)
        boot_present = np.zeros((steps, num_envs), dtype=bool)
        ep_return = np.full((steps, num_envs), np.nan, dtype=np.float32)
        seeds, options = [], []
        episodes = self.episodes
        for t in range(steps):
            flat = encode(space, self.obs)
            action, logp, value = self.policy.act(flat, self.mask)
            if self.mask is not None:
                rec["action_mask"].append(self.mask)
            first = episodes.step == 0
            seeds += [s if f else None for (s, _), f in zip(episodes.start, first, strict=True)]
            options += [o if f else None for (_, o), f in zip(episodes.start, first, strict=True)]
            rec["episode_id"] += episodes.ids()
            rec["step"].append(episodes.step.copy())
            rec["obs"].append(flat)
            next_obs, reward, terminated, truncated, info = self.envs.step(
                self.policy.head.to_env(action)
            )
            components = info.get("reward_components", {})
            for name in self.info.reward_components:  # Gymnasium's "_name" masks are skipped
                rec[f"reward_{name}"].append(components[name])
            rec["action"].append(action)
            rec["logp"].append(logp)
            rec["value"].append(value)
            rec["reward"].append(reward)
            rec["terminated"].append(terminated)
            rec["truncated"].append(truncated)
            failed = info.get("simulator_failure", np.zeros(num_envs, dtype=bool))
            rec["simulator_failure"].append(failed & info.get("_simulator_failure", True))
            done = terminated | truncated
            episodes.returns += reward
            if truncated.any():
                boot[t, truncated] = encode(space, info["final_obs"])[truncated]
                boot_present[t] = truncated
            ep_return[t, done] = episodes.returns[done]
            episodes.end(done)
            if done.any():
                episodes.begin(self.info, info["reset_info"], np.flatnonzero(done))
            self.obs = next_obs
            self.mask = mask_from(space, next_obs, info)
        boot[-1, ~done] = encode(space, self.obs)[~done]
        boot_present[-1] |= ~done
        rows = steps * num_envs
        columns: dict[str, Any] = {
            name: np.concatenate(rec[name]) if name != "episode_id" else rec[name] for name in rec
        }
        columns.update(
            actor_id=np.full(rows, self.actor_id, dtype=np.int32),
            env_index=np.tile(np.arange(num_envs, dtype=np.int32), steps),
            policy_version=np.full(rows, self.policy_version, dtype=np.int64),
            env_version=[self.info.version] * rows,
            bootstrap_obs=nullable_fixed_list(boot, boot_present.reshape(-1), obs_size),
            episode_return=pa.array(ep_return.reshape(-1), from_pandas=True),
            episode_seed=pa.array(seeds, type=pa.int64()),
            reset_options=pa.array(options, type=pa.string()),
        )
        return columns


_PER_STEP = (
    "episode_id",
    "step",
    "obs",
    "action",
    "logp",
    "value",
    "reward",
    "terminated",
    "truncated",
    "simulator_failure",
)
