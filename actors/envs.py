"""Building a rollout actor's vector env, and what every env must tell the pipeline.

Every vector env a rollout actor steps behaves the same way: SAME_STEP autoreset,
``info["final_obs"]`` (an (N, D) array, valid where ``info["_final_obs"]``), and
``info["reset_info"]`` with what each new episode needs to be re-created. Envs
with a batched ``vector_entry_point`` (Warehouse-v0) provide that themselves;
any other Gymnasium env is wrapped in :class:`EpisodeSeededVectorEnv`, which seeds
every episode with its own derived seed so it can be replayed alone. Behind a
simulator server, :class:`RemoteVectorEnv` gives the same transitions through one
batched session per env group (:func:`env_groups`), stepped group by group.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sims.declarations import Declarations, declarations
from sims.registry import env_spec
from sims.server import EnvLoop, follows_contract
from sims.versioning import env_version
from turnwise.config import EnvConfig
from turnwise.policy.observations import MASK_KEY, mask_from

log = logging.getLogger(__name__)


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


def env_groups(num_envs: int, groups: int = 1) -> list[np.ndarray]:
    """The env indices of each of ``groups`` groups (``actors.env_groups``), in order:
    contiguous, sizes differing by one at most. The policy acts for one group at a time,
    in every simulator mode (docs/pipeline.md, "Batched")."""
    return np.array_split(np.arange(num_envs), min(groups, num_envs))


def make_env(config: EnvConfig, **extra: Any) -> gymnasium.Env:
    """One env instance (in-process or a remote simulator session), with a clear error
    for an unknown id or bad kwargs."""
    mode = config.simulator.mode
    if mode in ("connect", "launch"):
        from sims.client import RemoteEnv

        sim = config.simulator
        return RemoteEnv(config.id, _address(config), sim.timeout_s, sim.connect_retries)
    if mode != "inprocess":
        raise ValueError(f"env.simulator.mode must be inprocess, connect or launch, got {mode!r}")
    spec = env_spec(config.id)  # imports a plug-in env's module; names what is wrong
    try:
        return gymnasium.make(spec, **config.kwargs, **extra)
    except TypeError as error:
        raise ValueError(
            f"env.kwargs {dict(config.kwargs)} rejected by {config.id}: {error}"
        ) from error


def _address(config: EnvConfig) -> Callable[[], str]:
    """Where the simulator server is: the configured address, or this process's
    launched server (started, or restarted after it died, on demand)."""
    from sims.client import SimulatorLauncher, parse_address

    sim = config.simulator
    if sim.mode == "connect":
        parse_address(sim.address)  # a malformed address fails here, clearly
        return lambda: sim.address
    key = json.dumps([config.id, dict(config.kwargs), sim.host], sort_keys=True)
    if key not in _LAUNCHERS:
        _LAUNCHERS[key] = SimulatorLauncher(config.id, dict(config.kwargs), sim.host)
    return _LAUNCHERS[key].address


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


def make_vector_env(
    config: EnvConfig, num_envs: int, seed_root: list[int], groups: int = 1
) -> VectorEnv:
    """The actor's vector env: the env's own batched implementation when it has one;
    for a remote simulator, batched sessions that give the same transitions."""
    if config.vectorization not in ("auto", "sync"):
        raise ValueError(
            f"env.vectorization must be 'auto' or 'sync', got {config.vectorization!r}"
        )
    if config.simulator.mode != "inprocess":  # its id need not be registered here
        return remote_vector_env(config, num_envs, seed_root, groups)
    spec = env_spec(config.id)
    if config.vectorization == "auto" and spec.vector_entry_point:
        batched = gymnasium.make_vec(
            spec, num_envs, vectorization_mode="vector_entry_point", **config.kwargs
        ).unwrapped
        if follows_contract(batched):
            return batched
        batched.close()
    return EpisodeSeededVectorEnv([lambda: make_env(config)] * num_envs, seed_root)


def remote_vector_env(
    config: EnvConfig, num_envs: int, seed_root: list[int], groups: int = 1
) -> VectorEnv:
    """One batched session per env group; a server that opens none (protocol 1 only)
    gets one session per env, stepped one after another."""
    from sims.client import BatchSession, HandshakeRefused

    sim, address = config.simulator, _address(config)
    vector = config.vectorization == "auto"
    sessions: list[Any] = []
    try:
        for rows in env_groups(num_envs, groups):
            sessions.append(
                BatchSession(
                    config.id, address, len(rows), sim.timeout_s, sim.connect_retries, vector
                )
            )
    except HandshakeRefused as refused:
        for session in sessions:
            session.close()
        log.warning("simulator opens no batched session (%s): one session per env", refused)
        return EpisodeSeededVectorEnv([lambda: make_env(config)] * num_envs, seed_root)
    return RemoteVectorEnv(sessions, seed_root)


class EpisodeSeeds:
    """Every episode's own seed, ``SeedSequence(seed_root + [env, episode])``; ``next``
    holds, per env, the seed its next episode gets."""

    def __init__(self, seed_root: list[int], num_envs: int) -> None:
        self._root = list(seed_root)
        self.episodes = np.zeros(num_envs, dtype=np.int64)
        self.next = np.array([self.seed(i, 1) for i in range(num_envs)], dtype=np.int64)

    def seed(self, env: int, episode: int) -> int:
        return int(np.random.SeedSequence([*self._root, env, episode]).generate_state(1)[0])

    def first(self) -> list[int]:
        return [self.seed(i, 0) for i in range(len(self.episodes))]

    def advance(self, rows: np.ndarray, done: np.ndarray) -> None:
        """Envs ``rows[done]`` started their next episode."""
        for i in rows[done]:
            self.episodes[i] += 1
            self.next[i] = self.seed(int(i), int(self.episodes[i]) + 1)


class EpisodeSeededVectorEnv(VectorEnv):
    """Single envs in an :class:`sims.server.EnvLoop` (SAME_STEP autoreset), every
    episode with its own seed (:class:`EpisodeSeeds`).

    Envs that declare ``reset_options`` report in their reset info what re-creates
    each episode (Warehouse-v0: persistent state and shift seed); those are seeded
    once and then reset without a seed, so their persistent state carries over."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_fns: list, seed_root: list[int]) -> None:
        self._loop = EnvLoop(env_fns)
        self.num_envs = self._loop.num_envs
        self.single_observation_space = self._loop.single_observation_space
        self.single_action_space = self._loop.single_action_space
        self.observation_space = self._loop.observation_space
        self.action_space = self._loop.action_space
        self._seeds = EpisodeSeeds(seed_root, self.num_envs)
        self._self_reporting = bool(declarations(self._loop.envs[0]).reset_options)
        self._rows = np.arange(self.num_envs)

    def reset(self, *, seed=None, options=None):
        seeds = self._seeds.first()
        obs, info = self._loop.reset(seed=seeds)
        return obs, info if self._self_reporting else seeded_reset_info(seeds, info)

    def step(self, actions):
        seeds = None if self._self_reporting else self._seeds.next.copy()
        obs, rewards, terminated, truncated, info = self._loop.step(actions, seeds)
        done = terminated | truncated
        if done.any() and seeds is not None:
            info["reset_info"] = {"episode_seed": np.where(done, seeds, 0)}
            self._seeds.advance(self._rows, done)
        return obs, rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self._loop.close()


def seeded_reset_info(seeds: list[int], info: dict[str, Any]) -> dict[str, Any]:
    """A first reset's info where each episode is re-created by its seed alone."""
    mask = {MASK_KEY: info[MASK_KEY]} if MASK_KEY in info else {}
    return {"episode_seed": np.array(seeds, dtype=np.int64), **mask}


class RemoteVectorEnv(VectorEnv):
    """An actor's envs on a simulator server, one batched session per group
    (:func:`env_groups`). ``send(g, actions)`` starts group ``g``'s step and
    ``receive(g)`` waits for it, so one group steps on the server while the policy
    acts for another; ``step`` does both for every group.

    Its transitions are those of :func:`make_vector_env` in-process for the same
    config: where the server steps the env's batched implementation, its envs are
    reset with the seeds given to ``reset`` and autoreset by it; else every episode
    has its own seed, as in :class:`EpisodeSeededVectorEnv`."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, sessions: list[Any], seed_root: list[int]) -> None:
        self.sessions = sessions
        bounds = np.cumsum([0, *(s.num_envs for s in sessions)])
        self.groups = [np.arange(a, b) for a, b in itertools.pairwise(bounds)]
        self.num_envs = int(bounds[-1])
        first = sessions[0]
        self.declarations = first.declarations
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._vectorized = first.vectorized
        self._seeded = not self._vectorized and not self.declarations.reset_options
        self._seeds = EpisodeSeeds(seed_root, self.num_envs)

    def reset(self, *, seed=None, options=None):
        seeds = _per_env(seed, self.num_envs) if self._vectorized else self._seeds.first()
        replies = [s.reset([seeds[i] for i in rows]) for s, rows in self._each()]
        obs, info = self._join(replies)
        return obs, seeded_reset_info(seeds, info) if self._seeded else info

    def send(self, group: int, actions: np.ndarray) -> None:
        seeds = self._seeds.next[self.groups[group]] if self._seeded else None
        self.sessions[group].send_step(actions, seeds)

    def receive(self, group: int):
        rows = self.groups[group]
        obs, rewards, terminated, truncated, info = self.sessions[group].receive_step()
        done = terminated | truncated
        if self._seeded and done.any():
            info["reset_info"] = {"episode_seed": np.where(done, self._seeds.next[rows], 0)}
            self._seeds.advance(rows, done)
        return obs, rewards, terminated, truncated, info

    def step(self, actions):
        for g, rows in enumerate(self.groups):
            self.send(g, actions[rows])
        results = [self.receive(g) for g in range(len(self.groups))]
        obs, info = self._join([(r[0], r[4]) for r in results])
        stacked = (np.concatenate([r[i] for r in results]) for i in (1, 2, 3))
        return obs, *stacked, info

    def _each(self):
        return zip(self.sessions, self.groups, strict=True)

    def _join(self, parts: list[tuple[Any, dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
        sizes = [len(rows) for rows in self.groups]
        obs = concat_groups([p[0] for p in parts], sizes)
        return obs, concat_groups([p[1] for p in parts], sizes)

    def close_extras(self, **kwargs: Any) -> None:
        for session in self.sessions:
            session.close()


def _per_env(seed: int | list[int | None] | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, int | np.integer):
        return [int(seed) + i for i in range(n)]
    return list(seed)


def concat_groups(parts: list[Any], sizes: list[int]) -> Any:
    """Batches or vector-env infos of consecutive groups as one, row after row; a key
    that a group's info lacks is zero (its ``_key`` mask False) in that group's rows."""
    template = next(p for p in parts if p is not None)
    if isinstance(template, dict):
        keys = dict.fromkeys(k for p in parts if p is not None for k in p)
        return {
            k: concat_groups([None if p is None else p.get(k) for p in parts], sizes) for k in keys
        }
    if isinstance(template, tuple):
        return tuple(
            concat_groups([None if p is None else p[i] for p in parts], sizes)
            for i in range(len(template))
        )
    template = np.asarray(template)
    blank = lambda n: np.zeros((n, *template.shape[1:]), dtype=template.dtype)  # noqa: E731
    return np.concatenate(
        [blank(n) if p is None else np.asarray(p) for p, n in zip(parts, sizes, strict=True)]
    )


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
