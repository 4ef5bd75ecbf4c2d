"""The rollout actor: steps K environments with a CPU copy of the policy.

A plain class (tests run it in-process); the launcher wraps it with ``ray.remote``.
``sample(weights)`` returns one time-major ``pyarrow.RecordBatch`` of
``fragment_length x envs_per_actor`` transitions in the run's schema, and appends
the same batch to the transition log. A recurrent policy's state is carried per env
across fragments, zeroed where an episode starts, and each fragment's initial state goes
into the batch's ``state`` column (on its t=0 rows).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from gymnasium.vector import VectorEnv

from actors.envs import (
    EnvInfo,
    RemoteVectorEnv,
    concat_groups,
    describe_env,
    env_groups,
    make_vector_env,
    replay_records,
)
from actors.transition_log import TransitionLog, next_incarnation
from turnwise.config import ActorsConfig, EnvConfig, PPOConfig
from turnwise.policy import (
    encode,
    flat_size,
    load_numpy_weights,
    mask_from,
    policy_from_config,
    recurrent_state_size,
)
from turnwise.schema import build_batch, nullable_fixed_list, transition_schema


def env_seeds(run_seed: int, actor_id: int, incarnation: int, num_envs: int) -> list[int]:
    """Seeds of one actor life's envs: distinct per actor, per restart and per env."""
    sequence = np.random.SeedSequence([run_seed, actor_id, incarnation])
    return [int(s) for s in sequence.generate_state(num_envs)]


class Episodes:
    """Per-env episode bookkeeping: ids, step indices, returns, replay records. ``rows``
    below is a group's slice of the actor's envs."""

    def __init__(self, prefix: str, num_envs: int) -> None:
        self.prefix = prefix
        self.count = np.zeros(num_envs, dtype=np.int64)
        self.step = np.zeros(num_envs, dtype=np.int64)
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.start: list[tuple[int | None, str | None]] = [(None, None)] * num_envs

    def ids(self, rows: slice) -> list[str]:
        return [f"{self.prefix}.{i}.{self.count[i]}" for i in range(rows.start, rows.stop)]

    def begin(self, env: EnvInfo, reset_info: dict[str, Any], rows: slice, new: np.ndarray) -> None:
        """Envs ``rows.start + new`` began episodes; ``reset_info`` is the group's."""
        for j in new:
            self.start[rows.start + int(j)] = replay_records(reset_info, env, int(j))

    def end(self, rows: slice, done: np.ndarray) -> None:
        self.count[rows] += done
        self.step[rows] = np.where(done, 0, self.step[rows] + 1)
        self.returns[rows][done] = 0.0


class Fragment:
    """One ``sample()``'s records, time-major: row ``t * num_envs + i`` is env ``i`` at
    step ``t``; groups fill their rows in any order."""

    def __init__(self, steps: int, num_envs: int, obs_size: int) -> None:
        self.steps, self.num_envs = steps, num_envs
        self.arrays: dict[str, np.ndarray] = {}
        self.lists: dict[str, list] = {k: [None] * (steps * num_envs) for k in _LISTED}
        self.boot = np.zeros((steps, num_envs, obs_size), dtype=np.float32)
        self.boot_present = np.zeros((steps, num_envs), dtype=bool)
        self.ep_return = np.full((steps, num_envs), np.nan, dtype=np.float32)

    def put(self, name: str, t: int, rows: slice, values: np.ndarray) -> None:
        array = self.arrays.get(name)
        if array is None:
            shape = (self.steps, self.num_envs, *values.shape[1:])
            array = self.arrays[name] = np.zeros(shape, dtype=values.dtype)
        array[t, rows] = values

    def put_list(self, name: str, t: int, rows: slice, values: list) -> None:
        base = t * self.num_envs
        self.lists[name][base + rows.start : base + rows.stop] = values

    def columns(self) -> dict[str, Any]:
        rows = self.steps * self.num_envs
        flat = {k: a.reshape(rows, *a.shape[2:]) for k, a in self.arrays.items()}
        return {**flat, "episode_id": self.lists["episode_id"]}


class GroupSteps:
    """A vector env stepped group by group, as :class:`actors.envs.RemoteVectorEnv` is:
    ``send(g, actions)`` keeps a group's actions, the first ``receive`` of a step
    steps every env at once, and each group gets its own rows of the result."""

    def __init__(self, envs: VectorEnv, groups: int = 1) -> None:
        self.envs = envs
        self.groups = env_groups(envs.num_envs, groups)
        self._actions: np.ndarray | None = None
        self._result: tuple | None = None
        self._unread: set[int] = set()

    def send(self, group: int, actions: np.ndarray) -> None:
        if self._actions is None:
            shape = (self.envs.num_envs, *actions.shape[1:])
            self._actions = np.zeros(shape, dtype=actions.dtype)
        self._actions[_span(self.groups[group])] = actions

    def receive(self, group: int) -> tuple:
        if self._result is None:
            self._result, self._actions = self.envs.step(self._actions), None
            self._unread = set(range(len(self.groups)))
        result = self._result
        self._unread.discard(group)
        if not self._unread:
            self._result = None
        return rows_of(result, _span(self.groups[group]))


def rows_of(batch: Any, rows: slice) -> Any:
    """The rows of a (nested) vector-env result."""
    if isinstance(batch, dict):
        return {k: rows_of(v, rows) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(rows_of(v, rows) for v in batch)
    if isinstance(batch, np.ndarray) and batch.ndim:
        return batch[rows]
    return batch


def _span(rows: np.ndarray) -> slice:
    return slice(int(rows[0]), int(rows[-1]) + 1)  # groups are contiguous


class RolloutWorker:
    """Role: ``sample(weights) -> pa.RecordBatch``.

    The envs step in groups (:func:`actors.envs.env_groups`): the policy acts for one
    group while another steps, which for a remote simulator overlaps the server's step
    with the policy. In-process the groups are stepped together, but the policy acts
    group by group just the same, so a run's transitions do not depend on where its
    simulator runs (its random draws follow the groups)."""

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
            state_size=recurrent_state_size(learner.model.core, learner.model.core_size),
        )
        num_envs = actors.envs_per_actor
        incarnation = next_incarnation(run_dir, actor_id) if run_dir else int(time.time())
        seeds = env_seeds(run_seed, actor_id, incarnation, num_envs)
        self.log = None
        if run_dir:
            record = {"run_seed": run_seed, "env_seeds": seeds, "env_version": self.info.version}
            self.log = TransitionLog(run_dir, actor_id, record)
        root, groups = [run_seed, actor_id, incarnation], actors.env_groups
        self.envs = make_vector_env(env, num_envs, root, groups)
        self.stepper = (
            self.envs if isinstance(self.envs, RemoteVectorEnv) else GroupSteps(self.envs, groups)
        )
        self.groups = [_span(rows) for rows in self.stepper.groups]
        obs, reset_info = self.envs.reset(seed=seeds)
        self.group_obs = [rows_of(obs, rows) for rows in self.groups]
        space = self.info.observation_space
        self.group_mask = [
            mask_from(space, o, rows_of(reset_info, r))
            for o, r in zip(self.group_obs, self.groups, strict=True)
        ]
        self.episodes = Episodes(f"{actor_id}.{incarnation}", num_envs)
        self.episodes.begin(self.info, reset_info, slice(0, num_envs), np.arange(num_envs))
        self.policy = policy_from_config(
            self.info.observation_space, self.info.action_space, learner
        )
        self.state = self.policy.initial_state(num_envs)  # each env's recurrent state
        self.policy_version = -1

    @property
    def obs(self) -> Any:
        """The observations every env is in, as one batch."""
        return concat_groups(self.group_obs, [r.stop - r.start for r in self.groups])

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
        """``fragment_length`` steps, pipelined: each group's step ``t - 1`` is received
        just before the policy acts for its step ``t``."""
        steps, num_envs = self.fragment_length, self.envs.num_envs
        fragment = Fragment(steps, num_envs, flat_size(self.info.observation_space))
        for t in range(steps):
            for g in range(len(self.groups)):
                if t:
                    self._finish(fragment, g, t - 1)
                self._start(fragment, g, t)
        for g in range(len(self.groups)):
            self._finish(fragment, g, steps - 1)
        return self._columns(fragment)

    def _start(self, fragment: Fragment, g: int, t: int) -> None:
        """The policy acts for group ``g`` at step ``t``; its envs start stepping."""
        rows, episodes, mask = self.groups[g], self.episodes, self.group_mask[g]
        flat = encode(self.info.observation_space, self.group_obs[g])
        state = self.state[rows]  # a view: zeroing it resets those envs' memory
        state[episodes.step[rows] == 0] = 0.0  # an episode starts: nothing to remember
        if t == 0 and self.policy.state_size:
            fragment.put("state", t, rows, state)
        action, logp, value, self.state[rows] = self.policy.act_recurrent(flat, state, mask)
        self.stepper.send(g, self.policy.head.to_env(action))
        if mask is not None:
            fragment.put("action_mask", t, rows, mask)
        for name, values in (("obs", flat), ("action", action), ("logp", logp), ("value", value)):
            fragment.put(name, t, rows, values)
        fragment.put("step", t, rows, episodes.step[rows])
        fragment.put_list("episode_id", t, rows, episodes.ids(rows))
        first = episodes.step[rows] == 0
        starts = episodes.start[rows]
        fragment.put_list(
            "seed", t, rows, [s if f else None for (s, _), f in zip(starts, first, strict=True)]
        )
        fragment.put_list(
            "options", t, rows, [o if f else None for (_, o), f in zip(starts, first, strict=True)]
        )

    def _finish(self, fragment: Fragment, g: int, t: int) -> None:
        """Group ``g``'s step ``t`` arrives: rewards, ends, the next observations."""
        rows, episodes, space = self.groups[g], self.episodes, self.info.observation_space
        next_obs, reward, terminated, truncated, info = self.stepper.receive(g)
        components = info.get("reward_components", {})
        for name in self.info.reward_components:  # Gymnasium's "_name" masks are skipped
            fragment.put(f"reward_{name}", t, rows, np.asarray(components[name]))
        failed = info.get("simulator_failure", np.zeros(len(reward), dtype=bool))
        failed = failed & info.get("_simulator_failure", True)
        for name, values in (
            ("reward", reward),
            ("terminated", terminated),
            ("truncated", truncated),
            ("simulator_failure", failed),
        ):
            fragment.put(name, t, rows, np.asarray(values))
        done = terminated | truncated
        episodes.returns[rows] += reward
        if truncated.any():
            fragment.boot[t, rows][truncated] = encode(space, info["final_obs"])[truncated]
            fragment.boot_present[t, rows] = truncated
        fragment.ep_return[t, rows][done] = episodes.returns[rows][done]
        episodes.end(rows, done)
        if done.any():
            episodes.begin(self.info, info["reset_info"], rows, np.flatnonzero(done))
        self.group_obs[g] = next_obs
        self.group_mask[g] = mask_from(space, next_obs, info)
        if t == fragment.steps - 1:  # where an episode goes on, bootstrap from here
            fragment.boot[t, rows][~done] = encode(space, next_obs)[~done]
            fragment.boot_present[t, rows] |= ~done

    def _columns(self, fragment: Fragment) -> dict[str, Any]:
        rows, obs_size = fragment.steps * fragment.num_envs, fragment.boot.shape[-1]
        columns = fragment.columns()
        if "state" in columns:  # the state before each env's first step here, on t=0 rows
            first = np.arange(rows) < fragment.num_envs
            columns["state"] = nullable_fixed_list(columns["state"], first, self.policy.state_size)
        columns.update(
            actor_id=np.full(rows, self.actor_id, dtype=np.int32),
            env_index=np.tile(np.arange(fragment.num_envs, dtype=np.int32), fragment.steps),
            policy_version=np.full(rows, self.policy_version, dtype=np.int64),
            env_version=[self.info.version] * rows,
            bootstrap_obs=nullable_fixed_list(
                fragment.boot, fragment.boot_present.reshape(-1), obs_size
            ),
            episode_return=pa.array(fragment.ep_return.reshape(-1), from_pandas=True),
            episode_seed=pa.array(fragment.lists["seed"], type=pa.int64()),
            reset_options=pa.array(fragment.lists["options"], type=pa.string()),
        )
        return columns


_LISTED = ("episode_id", "seed", "options")
