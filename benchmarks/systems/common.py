"""What every system adapter shares: tasks, budgets, the common evaluation, results.

All systems are judged by the same code: greedy actions on the same fixed held-out
seeds (``evaluator.episodes.run_episodes``), against the oracle where the env has
one. The clock that decides "time to solve" counts training only: it is paused
while a system is evaluated, so a slow evaluation never counts against a system.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium
import numpy as np

from evaluator.baselines import ORACLE
from evaluator.episodes import Act, evaluation_seeds, mean_return, run_episodes
from turnwise.config import EnvConfig, compose_config

EVAL_SEED = 1_000_000  # the evaluator's default first seed: held out from training


@dataclass(frozen=True)
class Task:
    """An env and what "solved" means on it."""

    name: str
    env_id: str
    kwargs: dict[str, Any]
    eval_episodes: int
    solved_fraction_of_baseline: float | None = None  # envs with an oracle
    solved_return: float | None = None  # envs without one

    @property
    def env_config(self) -> EnvConfig:
        return EnvConfig(id=self.env_id, kwargs=dict(self.kwargs))

    def make_env(self):
        """One plain Gymnasium env of this task (what RLlib's and SB3's factories build)."""
        import gymnasium

        import sims  # noqa: F401  (registers Warehouse-v0)

        return gymnasium.make(self.env_id, **self.kwargs)

    def is_solved(self, row: dict[str, Any]) -> bool:
        if self.solved_fraction_of_baseline is not None:
            return (row.get("fraction_of_baseline") or 0.0) >= self.solved_fraction_of_baseline
        return row["eval_return"] >= self.solved_return


TASKS = {
    "warehouse": Task(
        "warehouse", "Warehouse-v0", {"size": "small"}, 32, solved_fraction_of_baseline=0.9
    ),
    # the harder floors (sims/warehouse/config.py SIZES), each trained by +exp=<name>
    "warehouse_medium": Task(
        "warehouse_medium", "Warehouse-v0", {"size": "medium"}, 32, solved_fraction_of_baseline=0.9
    ),
    "warehouse_large": Task(
        "warehouse_large", "Warehouse-v0", {"size": "large"}, 32, solved_fraction_of_baseline=0.9
    ),
    # the memory test bed (docs/simulator.md): 256 episodes, as +exp=warehouse_memory's
    # evaluator (a policy at the 0.295 memoryless ceiling reads +-0.03 there)
    "warehouse_memory": Task(
        "warehouse_memory", "Warehouse-Memory-v0", {}, 256, solved_fraction_of_baseline=0.9
    ),
    "cartpole": Task("cartpole", "CartPole-v1", {}, 10, solved_return=450.0),
    "pendulum": Task("pendulum", "Pendulum-v1", {}, 10, solved_return=-250.0),
}


@dataclass(frozen=True)
class Settings:
    """What every system is given alike: network, parallel envs, seed."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    num_envs: int = 16  # parallel envs in total (RLlib/SB3; turnwise keeps its own layout)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # system-specific overrides


BASELINE_ENVS = 64  # the baselines' parallel envs at matched settings (the issue's layout)


@dataclass(frozen=True)
class Matched:
    """turnwise's algorithm settings of one experiment, in words every system can take.

    One turnwise update is one rollout actor's batch (envs per actor x fragment length
    rows); a baseline gets as many rows per update from ``num_envs`` envs of
    ``rollout_steps`` steps each.
    """

    experiment: str  # the +exp= it is read from
    rows_per_update: int
    num_envs: int  # the baselines' parallel envs
    rollout_steps: int  # steps per env per update
    epochs: int
    minibatch_size: int
    lr: float
    gamma: float
    gae_lambda: float
    clip: float
    entropy_coef: float
    value_coef: float
    max_grad_norm: float
    hidden_sizes: tuple[int, ...]
    normalize_observations: bool
    normalizer_clip: float

    def keywords(self, names: dict[str, str]) -> dict[str, Any]:
        """A system's keywords for these settings: ``names`` maps each keyword to the
        field it takes."""
        return {keyword: getattr(self, field) for keyword, field in names.items()}


def matched(experiment: str = "warehouse", num_envs: int = BASELINE_ENVS) -> Matched:
    """``+exp=<experiment>``'s settings, read from its config (never copied by hand)."""
    config = compose_config([f"+exp={experiment}"])
    learner, actors = config.learner, config.actors
    rows = actors.envs_per_actor * actors.fragment_length
    if rows % num_envs:
        raise ValueError(f"{rows} rows per update do not split over {num_envs} envs")
    return Matched(
        experiment=experiment,
        rows_per_update=rows,
        num_envs=num_envs,
        rollout_steps=rows // num_envs,
        epochs=learner.epochs,
        minibatch_size=learner.minibatch_size,
        lr=learner.lr,
        gamma=learner.gamma,
        gae_lambda=learner.gae_lambda,
        clip=learner.clip,
        entropy_coef=learner.entropy_coef,
        value_coef=learner.value_coef,
        max_grad_norm=learner.max_grad_norm,
        hidden_sizes=tuple(learner.hidden_sizes),
        normalize_observations=learner.normalizer.kind != "none",
        normalizer_clip=learner.normalizer.clip,
    )


def unmatched_by_alternating_ppo(normalizer: str) -> dict[str, str]:
    """What a PPO that alternates rollout and update in one process cannot match of
    turnwise's settings, and why (``normalizer``: its observation filter's name)."""
    return {
        "advantages": "GAE on the rollout's own policy (turnwise: V-trace against the "
        "behaviour policy, which may be an update or more behind)",
        "pipeline": "rollout and update alternate in one process (turnwise: two rollout "
        "actors sample while the learner updates)",
        "normalizer": f"{normalizer}'s mean and variance over the whole run (turnwise: over "
        "a window of the latest env steps, learner.normalizer.window_env_steps); both clip "
        "at 10",
    }


@dataclass(frozen=True)
class Budget:
    """A time-to-solve run stops when solved, at ``seconds`` of training time, or at
    ``env_steps``; it is evaluated every ``eval_every_env_steps``."""

    seconds: float
    env_steps: int
    eval_every_env_steps: int


class TrainingClock:
    """Wall-clock of training only: ``paused()`` while evaluating."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.excluded = 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.started - self.excluded

    def paused(self):
        clock = self

        class _Pause:
            def __enter__(self):
                self.at = time.perf_counter()

            def __exit__(self, *exc):
                clock.excluded += time.perf_counter() - self.at

        return _Pause()


_ORACLE_RETURNS: dict[str, float | None] = {}


def baseline_return(task: Task) -> float | None:
    """The oracle's mean return on the task's evaluation episodes (cached); None for a
    task judged by its return alone (an env without an oracle)."""
    if task.solved_fraction_of_baseline is None:
        return None
    if task.name not in _ORACLE_RETURNS:
        seeds = evaluation_seeds(EVAL_SEED, task.eval_episodes)
        _ORACLE_RETURNS[task.name] = ORACLE.mean_return(task.env_config, seeds)
    return _ORACLE_RETURNS[task.name]


def evaluate(task: Task, act: Act) -> dict[str, Any]:
    """Greedy episodes on the held-out seeds: ``eval_return`` and ``fraction_of_baseline``."""
    seeds = evaluation_seeds(EVAL_SEED, task.eval_episodes)
    episodes = run_episodes(task.env_config, seeds, act)
    value = mean_return(episodes)
    optimum = baseline_return(task)
    return {
        "eval_return": value,
        "fraction_of_baseline": None if not optimum else value / optimum,
    }


def batch_act(predict: Callable[[np.ndarray], np.ndarray]) -> Act:
    """An ``Act`` from a function of a batch of observations to greedy actions, put
    inside the action space (a Gaussian's mean can lie outside a ``Box``'s bounds; the
    env would clip it as the systems' own samplers do)."""

    def act(obs, envs, masks) -> np.ndarray:
        space = envs[0].action_space
        actions = np.asarray(predict(np.stack(obs))).reshape(len(envs), *space.shape)
        if isinstance(space, gymnasium.spaces.Box):
            actions = np.clip(actions, space.low, space.high).astype(space.dtype)
        return actions

    return act


def finite_or_none(value: Any) -> float | None:
    """A number fit for JSON: NaN, inf and missing values become None."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def throughput_result(
    system: str, task: Task, env_steps: int, seconds: float, settings: Settings, **notes: Any
) -> dict[str, Any]:
    """The record of a throughput measurement: env steps consumed by the learner over a
    fixed wall-clock window (start-up excluded)."""
    return {
        "system": system,
        "task": task.name,
        "env_steps": int(env_steps),
        "seconds": float(seconds),
        "env_steps_per_second": env_steps / seconds if seconds > 0 else 0.0,
        "settings": asdict(settings),
        **notes,
    }


class SolveRecorder:
    """Collects a time-to-solve curve and decides when to stop.

    ``due(env_steps)`` says whether an evaluation is due; ``record(env_steps, act)``
    evaluates with the clock paused and returns True when the run should stop; ``add``
    takes a point evaluated elsewhere (turnwise's own evaluator).
    """

    def __init__(self, system: str, task: Task, budget: Budget, settings: Settings) -> None:
        self.system, self.task, self.budget, self.settings = system, task, budget, settings
        self.clock = TrainingClock()
        self.curve: list[dict[str, Any]] = []
        self.solved: dict[str, Any] | None = None
        self.stopped_by = ""
        self._next_eval = budget.eval_every_env_steps

    def due(self, env_steps: int) -> bool:
        return env_steps >= self._next_eval or self.out_of_budget(env_steps)

    def out_of_budget(self, env_steps: int) -> bool:
        return self.clock.seconds() >= self.budget.seconds or env_steps >= self.budget.env_steps

    def record(self, env_steps: int, act: Act, train_return: float | None = None) -> bool:
        """Evaluate now (clock paused) and ``add`` the point."""
        seconds = self.clock.seconds()
        with self.clock.paused():
            scores = evaluate(self.task, act)
        point = {
            "seconds": seconds,
            "env_steps": int(env_steps),
            "train_return": finite_or_none(train_return),
        }
        return self.add({**point, **scores})

    def add(self, point: dict[str, Any]) -> bool:
        """Append an evaluated point (seconds, env_steps, train_return, eval_return,
        fraction_of_baseline); True once the run should stop: solved or out of budget."""
        self.curve.append(point)
        while self._next_eval <= point["env_steps"]:
            self._next_eval += self.budget.eval_every_env_steps
        if self.solved is None and self.task.is_solved(point):
            self.solved = {"seconds": point["seconds"], "env_steps": point["env_steps"]}
            self.stopped_by = "solved"
        elif self.stopped_by:
            pass  # a point after the stop (turnwise's final checkpoint) changes nothing
        elif point["seconds"] >= self.budget.seconds:
            self.stopped_by = "time cap"
        elif point["env_steps"] >= self.budget.env_steps:
            self.stopped_by = "step cap"
        return bool(self.stopped_by)

    def result(self, **notes: Any) -> dict[str, Any]:
        return {
            "system": self.system,
            "task": self.task.name,
            "curve": self.curve,
            "solved": self.solved,
            "stopped_by": self.stopped_by or "ended",
            "budget": asdict(self.budget),
            "settings": asdict(self.settings),
            **notes,
        }
