"""Fixed-seed evaluation episodes for a policy (or a baseline), in lockstep."""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.envs import make_env
from evaluator.coverage import StateKey, state_key_function
from sims.declarations import declarations
from turnwise.config import EnvConfig
from turnwise.policy.observations import encode, mask_from, stack

# (the n raw observations, the n unwrapped envs, their legal-action masks (n, M) or
# None) -> n actions as the env takes them: one call per lockstep step
Act = Callable[[list[Any], Sequence[object], np.ndarray | None], np.ndarray]


@dataclass(frozen=True)
class Episode:
    """What one evaluation episode did: enough for every evaluation metric."""

    seed: int
    total_return: float
    length: int
    terminated: bool
    success: bool | None  # info["is_success"] at the end, where the env reports it
    actions: tuple[Any, ...]  # as the env took them (ints, or lists for vector actions)
    observations: np.ndarray  # (length, D) the observations the policy acted on, flat
    masks: np.ndarray | None = None  # (length, M) the legal actions, where the env has masks
    components: dict[str, float] = field(default_factory=dict)  # summed reward components
    component_counts: dict[str, int] = field(default_factory=dict)  # steps paying each one
    visits: Counter = field(default_factory=Counter)  # state key -> visits
    reachable_states: int | None = None  # where the env can count them


def evaluation_seeds(first: int, count: int) -> list[int]:
    """The fixed evaluation seeds: ``first .. first + count - 1``. Training envs are
    seeded from SeedSequence draws of the run seed, so these stay held out."""
    return list(range(first, first + count))


class _Recorder:
    """One episode in progress: accumulates what ``Episode`` reports."""

    def __init__(self, env, seed: int, key: StateKey, reachable: bool) -> None:
        self.env, self.seed, self.key = env, seed, key
        self.space = env.observation_space
        self.obs, info = env.reset(seed=seed)
        self.mask = _one_mask(self.space, self.obs, info)
        base = env.unwrapped
        self.base = base
        self.reachable = base.reachable_state_count() if reachable else None
        self.total, self.actions, self.observations, self.masks = 0.0, [], [], []
        self.components: Counter = Counter()
        self.counts: Counter = Counter()
        self.visits: Counter = Counter([key(base, self.obs)])
        self.done = self.terminated = False
        self.info: dict = {}

    def step(self, action: Any) -> None:
        self.observations.append(encode(self.space, stack(self.space, [self.obs]))[0])
        if self.mask is not None:
            self.masks.append(self.mask)
        self.obs, reward, self.terminated, truncated, self.info = self.env.step(action)
        self.mask = _one_mask(self.space, self.obs, self.info)
        self.total += float(reward)
        self.actions.append(action.tolist() if isinstance(action, np.ndarray) else action)
        self.visits[self.key(self.base, self.obs)] += 1
        for name, value in self.info.get("reward_components", {}).items():
            self.components[name] += float(value)
            self.counts[name] += int(value != 0)
        self.done = bool(self.terminated or truncated)

    def episode(self) -> Episode:
        return Episode(
            seed=self.seed,
            total_return=self.total,
            length=len(self.actions),
            terminated=bool(self.terminated),
            success=bool(self.info["is_success"]) if "is_success" in self.info else None,
            actions=tuple(self.actions),
            observations=np.asarray(self.observations, dtype=np.float32),
            masks=np.asarray(self.masks, dtype=bool) if self.masks else None,
            components=dict(self.components),
            component_counts=dict(self.counts),
            visits=self.visits,
            reachable_states=self.reachable,
        )


def _one_mask(space, obs: Any, info: dict) -> np.ndarray | None:
    mask = mask_from(space, stack(space, [obs]), {k: [v] for k, v in info.items()})
    return None if mask is None else mask[0]


def run_episodes(config: EnvConfig, seeds: Sequence[int], act: Act) -> list[Episode]:
    """One episode per seed from ``reset(seed=seed)`` (a new world: the same episodes
    every time), all stepped in lockstep so the policy runs one batched forward per
    step instead of one per env step. Each episode has its own env, so the results
    do not depend on how many run together."""
    envs = [make_env(config) for _ in seeds]
    try:
        key = state_key_function(envs[0])
        reachable = declarations(envs[0]).reachable_states
        running = [
            _Recorder(env, seed, key, reachable) for env, seed in zip(envs, seeds, strict=True)
        ]
        while live := [r for r in running if not r.done]:
            masks = None if live[0].mask is None else np.stack([r.mask for r in live])
            actions = act([r.obs for r in live], [r.base for r in live], masks)
            for recorder, action in zip(live, _rows(actions, len(live)), strict=True):
                recorder.step(action)
        return [r.episode() for r in running]
    finally:
        for env in envs:
            env.close()


def _rows(actions: Any, n: int) -> list[Any]:
    """n actions, one per env: scalars as Python ints/floats, arrays as arrays."""
    array = np.asarray(actions)
    if array.ndim <= 1 and array.size == n:
        return [a.item() for a in array.reshape(n)]
    return list(array.reshape(n, *array.shape[1:]))


def policy_actor(model, greedy: bool = True) -> Act:
    """Wrap an ActorCritic as an ``Act``: its mode (greedy) by default, masks honoured.
    A recurrent policy keeps one state per env, zeros at its first step: :func:`run_episodes`
    runs one episode per env, so an env's state is its episode's."""
    states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    start = model.initial_state(1)[0]

    def act(observations: list[Any], envs: Sequence[object], masks: np.ndarray | None):
        flat = model.flat(stack(model.observation_space, observations))
        if not model.state_size:
            return model.head.to_env(model.act(flat, masks, greedy=greedy)[0])
        state = np.stack([states.get(env, start) for env in envs])
        action, _, _, next_state = model.act_recurrent(flat, state, masks, greedy=greedy)
        for env, row in zip(envs, next_state, strict=True):
            states[env] = row
        return model.head.to_env(action)

    return act


def mean_return(episodes: Sequence[Episode]) -> float:
    return float(np.mean([e.total_return for e in episodes]))
