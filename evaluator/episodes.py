"""Fixed-seed evaluation episodes for a policy (or a baseline), in lockstep."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from actors.envs import make_env
from evaluator.coverage import StateKey, state_key_function
from sims.declarations import declarations
from turnwise.config import EnvConfig

# (observations (n, D), the n unwrapped envs) -> n actions: one call per lockstep step
Act = Callable[[np.ndarray, Sequence[object]], np.ndarray]


@dataclass(frozen=True)
class Episode:
    """What one evaluation episode did: enough for every evaluation metric."""

    seed: int
    total_return: float
    length: int
    terminated: bool
    success: bool | None  # info["is_success"] at the end, where the env reports it
    actions: tuple[int, ...]
    observations: np.ndarray  # (length, D) the observations the policy acted on
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
        self.obs, _ = env.reset(seed=seed)
        base = env.unwrapped
        self.base = base
        self.reachable = base.reachable_state_count() if reachable else None
        self.total, self.actions, self.observations = 0.0, [], []
        self.components: Counter = Counter()
        self.counts: Counter = Counter()
        self.visits: Counter = Counter([key(base, self.obs)])
        self.done = self.terminated = False
        self.info: dict = {}

    def step(self, action: int) -> None:
        self.observations.append(self.obs)
        self.obs, reward, self.terminated, truncated, self.info = self.env.step(action)
        self.total += float(reward)
        self.actions.append(int(action))
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
            components=dict(self.components),
            component_counts=dict(self.counts),
            visits=self.visits,
            reachable_states=self.reachable,
        )


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
            actions = act(np.stack([r.obs for r in live]), [r.base for r in live])
            for recorder, action in zip(live, np.asarray(actions).reshape(-1), strict=True):
                recorder.step(int(action))
        return [r.episode() for r in running]
    finally:
        for env in envs:
            env.close()


def policy_actor(model, greedy: bool = True) -> Act:
    """Wrap an ActorCritic as an ``Act``: greedy (argmax) by default."""
    return lambda obs, envs: model.act(obs, greedy=greedy)[0]


def mean_return(episodes: Sequence[Episode]) -> float:
    return float(np.mean([e.total_return for e in episodes]))
