"""Fixed-seed evaluation episodes for a policy, and the oracle's baseline on them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from actors.envs import make_env
from turnwise.config import EnvConfig

Act = Callable[[np.ndarray, object], int]  # (observation, unwrapped env) -> action


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


def state_key(env, obs: np.ndarray) -> Hashable:
    """The env's own state key where it has one, else the observation binned to 0.1."""
    if hasattr(env, "state_key"):
        return env.state_key()
    return tuple(np.round(np.asarray(obs, dtype=np.float64).ravel()[:16], 1).tolist())


def run_episode(env, seed: int, act: Act) -> Episode:
    """One episode from ``reset(seed=seed)``, a new world: the same episode every time."""
    obs, _ = env.reset(seed=seed)
    base = env.unwrapped
    reachable = base.reachable_state_count() if hasattr(base, "reachable_state_count") else None
    total, actions, observations = 0.0, [], []
    components: Counter = Counter()
    counts: Counter = Counter()
    visits: Counter = Counter([state_key(base, obs)])
    done = terminated = False
    info: dict = {}
    while not done:
        action = act(obs, base)
        observations.append(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        actions.append(int(action))
        visits[state_key(base, obs)] += 1
        for name, value in info.get("reward_components", {}).items():
            components[name] += float(value)
            counts[name] += int(value != 0)
        done = terminated or truncated
    return Episode(
        seed=seed,
        total_return=total,
        length=len(actions),
        terminated=bool(terminated),
        success=bool(info["is_success"]) if "is_success" in info else None,
        actions=tuple(actions),
        observations=np.asarray(observations, dtype=np.float32),
        components=dict(components),
        component_counts=dict(counts),
        visits=visits,
        reachable_states=reachable,
    )


def run_episodes(config: EnvConfig, seeds: Sequence[int], act: Act) -> list[Episode]:
    env = make_env(config)
    try:
        return [run_episode(env, seed, act) for seed in seeds]
    finally:
        env.close()


def oracle_for(config: EnvConfig) -> Act | None:
    """The known-optimal policy of an env, where the simulator provides one."""
    if config.id == "Warehouse-v0":
        from sims.warehouse import WarehouseOracle

        oracle = WarehouseOracle()
        return lambda obs, env: oracle.act(env)
    return None


def policy_actor(model, greedy: bool = True) -> Act:
    """Wrap an ActorCritic as an ``Act``: greedy (argmax) by default."""
    return lambda obs, env: int(model.act(obs[None], greedy=greedy)[0][0])


def mean_return(episodes: Sequence[Episode]) -> float:
    return float(np.mean([e.total_return for e in episodes]))
