"""Building a rollout actor's vector env, and what every env must tell the pipeline.

Every vector env a rollout actor steps behaves the same way: SAME_STEP autoreset,
``info["final_obs"]`` (an (N, D) array, valid where ``info["_final_obs"]``), and
``info["reset_info"]`` with what each new episode needs to be re-created. Envs
with a batched ``vector_entry_point`` (Warehouse-v0) provide that themselves;
any other Gymnasium env is wrapped in :class:`EpisodeSeededVectorEnv`, which seeds
every episode with its own derived seed so it can be replayed alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from sims.declarations import Declarations, declarations
from sims.registry import env_spec
from sims.versioning import env_version
from turnwise.config import EnvConfig
from turnwise.policy.observations import MASK_KEY, mask_from


@dataclass(frozen=True)
class EnvInfo:
    """What the pipeline needs to know about an env, read once from a probe instance."""

    env_id: str
    version: str
    observation_space: gymnasium.Space
    action_space: gymnasium.Space
    declarations: Declarations
    action_mask: bool = False  # the env supplies a legal-action mask (info or Dict part)

    @property
    def reward_components(self) -> tuple[str, ...]:
        return self.declarations.reward_components

    @property
    def persistent_state(self) -> tuple[str, ...]:
        return self.declarations.persistent_state

    @property
    def reset_options(self) -> frozenset[str]:
        return self.declarations.reset_options


_LAUNCHERS: dict[str, Any] = {}  # one launched simulator server per process (= per actor)


def make_env(config: EnvConfig, **extra: Any) -> gymnasium.Env:
    """One env instance (in-process or a remote simulator session), with a clear error
    for an unknown id or bad kwargs."""
    mode = config.simulator.mode
    if mode in ("connect", "launch"):
        return _remote_env(config)
    if mode != "inprocess":
        raise ValueError(f"env.simulator.mode must be inprocess, connect or launch, got {mode!r}")
    spec = env_spec(config.id)  # imports a plug-in env's module; names what is wrong
    try:
        return gymnasium.make(spec, **config.kwargs, **extra)
    except TypeError as error:
        raise ValueError(
            f"env.kwargs {dict(config.kwargs)} rejected by {config.id}: {error}"
        ) from error


def _remote_env(config: EnvConfig) -> gymnasium.Env:
    from sims.client import RemoteEnv, SimulatorLauncher, parse_address

    sim = config.simulator
    if sim.mode == "connect":
        parse_address(sim.address)  # a malformed address fails here, clearly
        address = lambda: sim.address  # noqa: E731
    else:
        key = json.dumps([config.id, dict(config.kwargs), sim.host], sort_keys=True)
        if key not in _LAUNCHERS:
            _LAUNCHERS[key] = SimulatorLauncher(config.id, dict(config.kwargs), sim.host)
        address = _LAUNCHERS[key].address
    return RemoteEnv(config.id, address, sim.timeout_s, sim.connect_retries)


def close_launchers() -> None:
    """Stop this process's launched simulator servers (the driver's, once it has
    read the env's spaces: its actors launch their own)."""
    while _LAUNCHERS:
        _LAUNCHERS.popitem()[1].close()


def stop_launched_servers() -> None:
    """Stop this process's launched simulator servers but keep their launchers: the
    next env launches a fresh one (the evaluator's, idle between evaluations)."""
    for launcher in _LAUNCHERS.values():
        launcher.close()


def describe_env(config: EnvConfig) -> EnvInfo:
    env = make_env(config)
    try:
        version, _ = env_version(config.id, config.kwargs, env)
        obs, info = env.reset(seed=0)  # a mask, if any, comes with every observation
        return EnvInfo(
            env_id=config.id,
            version=version,
            observation_space=env.observation_space,
            action_space=env.action_space,
            declarations=declarations(env),
            action_mask=mask_from(env.observation_space, obs, info) is not None,
        )
    finally:
        env.close()


def make_vector_env(config: EnvConfig, num_envs: int, seed_root: list[int]) -> VectorEnv:
    """The actor's vector env: the env's own batched implementation when it has one."""
    if config.vectorization not in ("auto", "sync"):
        raise ValueError(
            f"env.vectorization must be 'auto' or 'sync', got {config.vectorization!r}"
        )
    # a remote simulator's id need not be registered here: it may not even be Python
    spec = env_spec(config.id) if config.simulator.mode == "inprocess" else None
    if spec is not None and config.vectorization == "auto" and spec.vector_entry_point:
        batched = gymnasium.make_vec(
            spec, num_envs, vectorization_mode="vector_entry_point", **config.kwargs
        ).unwrapped
        if follows_contract(batched):
            return batched
        batched.close()
    return EpisodeSeededVectorEnv([lambda: make_env(config)] * num_envs, seed_root)


def follows_contract(vec: VectorEnv) -> bool:
    """A batched env is used as is only if it autoresets on the same step and declares
    its state (so it can report what re-creates each episode)."""
    same_step = vec.metadata.get("autoreset_mode") == AutoresetMode.SAME_STEP
    return same_step and hasattr(vec, "state_variables")


class EpisodeSeededVectorEnv(VectorEnv):
    """SyncVectorEnv with SAME_STEP autoreset in which every episode gets its own seed
    ``SeedSequence(seed_root + [env, episode]).generate_state(1)[0]``.

    Envs that declare ``reset_options`` report in their reset info what re-creates
    each episode (Warehouse-v0: persistent state and shift seed); those are seeded
    once and then reset without a seed, so their persistent state carries over."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_fns: list, seed_root: list[int]) -> None:
        self._inner = SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.DISABLED)
        self.num_envs = self._inner.num_envs
        self.single_observation_space = self._inner.single_observation_space
        self.single_action_space = self._inner.single_action_space
        self.observation_space = self._inner.observation_space
        self.action_space = self._inner.action_space
        self._seed_root = list(seed_root)
        self._episodes = np.zeros(self.num_envs, dtype=np.int64)
        self._self_reporting = bool(declarations(self._inner.envs[0]).reset_options)

    def episode_seeds(self, mask: np.ndarray) -> list[int | None]:
        return [
            int(np.random.SeedSequence([*self._seed_root, i, int(n)]).generate_state(1)[0])
            if m
            else None
            for i, (m, n) in enumerate(zip(mask, self._episodes, strict=True))
        ]

    def reset(self, *, seed=None, options=None):
        everyone = np.ones(self.num_envs, dtype=bool)
        seeds = self.episode_seeds(everyone)
        obs, info = self._inner.reset(seed=seeds)
        if self._self_reporting:
            return obs, info
        mask = {MASK_KEY: info[MASK_KEY]} if MASK_KEY in info else {}
        return obs, {"episode_seed": np.array(seeds, dtype=np.int64), **mask}

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self._inner.step(actions)
        done = terminated | truncated
        if done.any():
            info["final_obs"] = where_rows(done, obs, zeros_like_rows(obs))
            info["_final_obs"] = done
            self._episodes += done
            seeds = [None] * self.num_envs if self._self_reporting else self.episode_seeds(done)
            new_obs, reset_info = self._inner.reset(seed=seeds, options={"reset_mask": done})
            obs = where_rows(done, new_obs, obs)
            if MASK_KEY in reset_info:  # the mask of each new episode's first observation
                info[MASK_KEY] = where_rows(done, reset_info[MASK_KEY], info[MASK_KEY])
            if not self._self_reporting:
                reset_info = {"episode_seed": np.array([s or 0 for s in seeds], np.int64)}
            info["reset_info"] = reset_info
        return obs, rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self._inner.close()


def where_rows(rows: np.ndarray, new: Any, old: Any) -> Any:
    """``new`` where ``rows`` (N,) is True, else ``old``, for arrays and Dict/Tuple
    batches alike."""
    if isinstance(new, dict):
        return {k: where_rows(rows, new[k], old[k]) for k in new}
    if isinstance(new, tuple):
        return tuple(where_rows(rows, n, o) for n, o in zip(new, old, strict=True))
    new = np.asarray(new)
    return np.where(rows.reshape(-1, *([1] * (new.ndim - 1))), new, old)


def zeros_like_rows(batch: Any) -> Any:
    if isinstance(batch, dict):
        return {k: zeros_like_rows(v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(zeros_like_rows(v) for v in batch)
    return np.zeros_like(batch)


def replay_records(
    reset_info: dict[str, Any], env: EnvInfo, index: int
) -> tuple[int | None, str | None]:
    """(episode_seed, reset_options JSON) that re-create env ``index``'s new episode
    as ``reset(seed=episode_seed, options=reset_options)`` of a single env."""
    if "episode_seed" in reset_info:
        return int(reset_info["episode_seed"][index]), None
    options: dict[str, Any] = {
        key: _plain(reset_info[key][index])
        for key in env.reset_options
        if key in reset_info and key != "persistent_state"
    }
    persistent = {name: _plain(reset_info[name][index]) for name in env.persistent_state}
    if persistent:
        options["persistent_state"] = persistent
    return None, json.dumps(options, sort_keys=True)


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value
