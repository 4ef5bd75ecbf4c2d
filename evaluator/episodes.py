"""Fixed-seed evaluation episodes for a policy, and the oracle's baseline on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from actors.envs import make_env
from turnwise.config import EnvConfig

Act = Callable[[np.ndarray, object], int]  # (observation, unwrapped env) -> action


@dataclass(frozen=True)
class Episode:
    seed: int
    total_return: float
    length: int
    terminated: bool
    actions: tuple[int, ...]


def evaluation_seeds(first: int, count: int) -> list[int]:
    """The fixed evaluation seeds: ``first .. first + count - 1``. Training envs are
    seeded from SeedSequence draws of the run seed, so these stay held out."""
    return list(range(first, first + count))


def run_episode(env, seed: int, act: Act) -> Episode:
    """One episode from ``reset(seed=seed)``, a new world: the same episode every time."""
    obs, _ = env.reset(seed=seed)
    total, actions, done, terminated = 0.0, [], False, False
    while not done:
        action = act(obs, env.unwrapped)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        actions.append(int(action))
        done = terminated or truncated
    return Episode(seed, total, len(actions), bool(terminated), tuple(actions))


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
