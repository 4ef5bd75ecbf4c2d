"""Stable-Baselines3's PPO behind the benchmark interface (see ``common``).

Built the way an SB3 user would: ``make_vec_env`` over ``task.make_env`` with
``DummyVecEnv`` (SB3's advice for cheap envs), PPO with SB3's default hyperparameters
but the shared network (``settings.hidden_sizes``, tanh), on the CPU. Training runs in
chunks of one rollout (``n_steps * n_envs`` env steps): ``learn()`` cannot stop sooner
without throwing the partial rollout away, so a rollout is also the granularity of
the throughput window and of evaluations.

``settings.extra`` is passed to ``PPO(...)`` as keyword overrides (``n_steps``,
``batch_size``, ``learning_rate``...), except three adapter keys: ``vec_env``
(``"dummy"``, the default, or ``"subproc"``), ``normalize`` (default false; true:
``VecNormalize`` on observations only, clipped at 10 as turnwise's normalizer, its
running statistics applied to the evaluation's observations too) and
``torch_threads`` (default 1, as in the repo's rollout actors: on this 2-core machine
torch's default of 2 threads was about 5% faster when the machine was quiet but ran PPO
updates 10-40x slower whenever other processes were busy).

``matched_extra(experiment)`` is the ``settings.extra`` (and ``num_envs``) giving SB3
turnwise's ``+exp=<experiment>`` settings; ``UNMATCHED`` says what it cannot match.
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any

import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from benchmarks.systems.common import (
    Budget,
    Settings,
    SolveRecorder,
    Task,
    batch_act,
    matched,
    throughput_result,
    unmatched_by_alternating_ppo,
)

SYSTEM = "sb3"
_VEC_ENVS = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
UNMATCHED = unmatched_by_alternating_ppo("VecNormalize")


MATCHED_KEYWORDS = {  # PPO(...) keyword (or adapter key) -> common.Matched field
    "num_envs": "num_envs",
    "n_steps": "rollout_steps",
    "batch_size": "minibatch_size",
    "n_epochs": "epochs",
    "learning_rate": "lr",
    "gamma": "gamma",
    "gae_lambda": "gae_lambda",
    "clip_range": "clip",
    "ent_coef": "entropy_coef",
    "vf_coef": "value_coef",
    "max_grad_norm": "max_grad_norm",
    "normalize": "normalize_observations",
}


def matched_extra(experiment: str = "warehouse") -> dict[str, Any]:
    """PPO's keyword arguments (and ``num_envs``) for ``+exp=<experiment>``'s settings."""
    return matched(experiment).keywords(MATCHED_KEYWORDS)


def _ppo_default(name: str) -> Any:
    """SB3's own default for a ``PPO.__init__`` argument."""
    return inspect.signature(PPO.__init__).parameters[name].default


def without_log_files(model: BaseAlgorithm) -> BaseAlgorithm:
    """``model`` with a logger that writes nothing: SB3's default one (``verbose=0``, no
    ``tensorboard_log``) still creates an empty ``$TMPDIR/SB3-<time>`` folder per run."""
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _build(task: Task, settings: Settings, overrides: dict[str, Any] | None = None) -> PPO:
    """The vectorized env and the PPO model (nothing trained yet)."""
    extra = dict(settings.extra)
    vec_env_cls = _VEC_ENVS[extra.pop("vec_env", "dummy")]
    torch.set_num_threads(int(extra.pop("torch_threads", 1)))
    env = make_vec_env(
        lambda: task.make_env(),
        n_envs=settings.num_envs,
        seed=settings.seed,
        vec_env_cls=vec_env_cls,
    )
    if extra.pop("normalize", False):
        env = VecNormalize(env, norm_obs=True, norm_reward=False, clip_obs=10.0)
    kwargs: dict[str, Any] = {**extra, **(overrides or {})}
    model = PPO(
        "MlpPolicy",
        env,
        policy_kwargs=dict(net_arch=list(settings.hidden_sizes), activation_fn=torch.nn.Tanh),
        seed=settings.seed,
        device="cpu",
        verbose=0,
        **kwargs,
    )
    return without_log_files(model)


def _rollout(model: PPO) -> int:
    """Env steps in one rollout: the chunk ``learn()`` is called with."""
    return model.n_steps * model.n_envs


def _learn_chunk(model: PPO) -> None:
    """Exactly one more rollout and its update: with ``reset_num_timesteps=False`` SB3
    adds the steps so far to ``total_timesteps`` and keeps the envs' episodes going
    (the first call resets them)."""
    model.learn(total_timesteps=_rollout(model), reset_num_timesteps=False)


def _notes(model: PPO, **more: Any) -> dict[str, Any]:
    return {
        "n_steps": model.n_steps,
        "batch_size": model.batch_size,
        "n_epochs": model.n_epochs,
        "rollout_env_steps": _rollout(model),
        "vec_env": type(_unwrapped(model.get_env())).__name__,
        "normalize": isinstance(model.get_env(), VecNormalize),
        "torch_threads": torch.get_num_threads(),
        "stable_baselines3": stable_baselines3.__version__,
        **more,
    }


def _small_budget_n_steps(budget: Budget, settings: Settings) -> int | None:
    """A shorter rollout for a budget smaller than one default rollout, else None.

    With SB3's default ``n_steps`` (2048) and 16 envs one rollout is 32K env steps, so a
    tiny budget (a unit test's) would overshoot many times over and get at most one
    evaluation. Then the rollout is shrunk to about ``min(env_steps, eval_every)``,
    rounded up so it divides into whole minibatches. Real budgets keep SB3's default.
    An explicit ``n_steps`` in ``settings.extra`` always wins.
    """
    default = _ppo_default("n_steps")
    if "n_steps" in settings.extra or default * settings.num_envs <= budget.env_steps:
        return None
    target = max(1, min(budget.env_steps, budget.eval_every_env_steps))
    batch_size = int(settings.extra.get("batch_size", _ppo_default("batch_size")))
    step = batch_size // math.gcd(batch_size, settings.num_envs)  # n_steps multiple of this
    n_steps = math.ceil(math.ceil(target / settings.num_envs) / step) * step
    return min(max(n_steps, 2), default)


def throughput(task: Task, seconds: float, settings: Settings) -> dict[str, Any]:
    """Env steps per second of wall-clock over a window of whole rollouts (each with
    its update), after one warm-up rollout; model and env construction excluded."""
    model = _build(task, settings)
    _learn_chunk(model)  # warm-up, not counted
    start_steps, start = model.num_timesteps, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        _learn_chunk(model)
    env_steps = model.num_timesteps - start_steps
    result = throughput_result(SYSTEM, task, env_steps, elapsed, settings, **_notes(model))
    model.get_env().close()
    return result


def _train_return(model: PPO) -> float | None:
    """Mean return of the last (up to 100) finished training episodes, per SB3's Monitor."""
    returns = [float(ep["r"]) for ep in model.ep_info_buffer or []]
    return float(np.mean(returns)) if returns else None


def _unwrapped(env: Any) -> Any:
    return env.venv if isinstance(env, VecNormalize) else env


def _seen(model: PPO, obs: np.ndarray) -> np.ndarray:
    """Observations as the policy saw them in training: normalized by VecNormalize's
    statistics so far (not updated here), if it is on."""
    env = model.get_env()
    return env.normalize_obs(obs) if isinstance(env, VecNormalize) else obs


def time_to_solve(task: Task, budget: Budget, settings: Settings) -> dict[str, Any]:
    """Train in rollout-sized chunks, evaluating greedily (clock paused) when due."""
    n_steps = _small_budget_n_steps(budget, settings)
    model = _build(task, settings, None if n_steps is None else {"n_steps": n_steps})
    recorder = SolveRecorder(SYSTEM, task, budget, settings)
    act = batch_act(lambda obs: model.predict(_seen(model, obs), deterministic=True)[0])
    while True:
        _learn_chunk(model)
        steps = model.num_timesteps
        if recorder.due(steps) and recorder.record(steps, act, _train_return(model)):
            break
    model.get_env().close()
    return recorder.result(**_notes(model, n_steps_shrunk=n_steps is not None))
