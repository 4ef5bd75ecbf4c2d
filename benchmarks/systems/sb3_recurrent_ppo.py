"""sb3-contrib's RecurrentPPO behind the benchmark interface (see ``common``).

Built as an sb3-contrib user would: ``make_vec_env`` with ``DummyVecEnv``,
``RecurrentPPO("MlpLstmPolicy")`` with sb3-contrib's default hyperparameters (128
steps per env per rollout, 10 epochs, minibatches of 128, lr 3e-4) but the shared
network (``settings.hidden_sizes``, tanh) after an LSTM of ``lstm_hidden_size``
(default here 64, turnwise's ``learner.model.core_size``; sb3-contrib's own default is
256), on the CPU. As in the SB3 adapter, training runs in chunks of one rollout and
``settings.extra`` passes keyword overrides to ``RecurrentPPO(...)`` (``n_steps``,
``batch_size``, ``learning_rate``...), except the adapter's own keys: ``torch_threads``
(default 1), ``lstm_hidden_size``, ``shared_lstm`` (default false, sb3-contrib's: actor
and critic each have an LSTM; true: one LSTM for both, as turnwise's core) and
``normalize`` (default false; true: ``VecNormalize`` on observations only, its running
statistics applied to the evaluation's observations too).

Evaluation is greedy on the common held-out seeds; each evaluation env carries its own
LSTM state from the start of its episode (``episode_start`` on its first step).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import sb3_contrib
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from benchmarks.systems.common import (
    Budget,
    Settings,
    SolveRecorder,
    Task,
    throughput_result,
)
from benchmarks.systems.sb3_ppo import without_log_files
from evaluator.episodes import Act

SYSTEM = "sb3_recurrent"


def _build(task: Task, settings: Settings) -> RecurrentPPO:
    extra = dict(settings.extra)
    torch.set_num_threads(int(extra.pop("torch_threads", 1)))
    lstm = int(extra.pop("lstm_hidden_size", 64))
    shared = bool(extra.pop("shared_lstm", False))
    env = make_vec_env(
        lambda: task.make_env(),
        n_envs=settings.num_envs,
        seed=settings.seed,
        vec_env_cls=DummyVecEnv,
    )
    if extra.pop("normalize", False):
        env = VecNormalize(env, norm_obs=True, norm_reward=False)
    policy_kwargs = dict(
        net_arch=list(settings.hidden_sizes), activation_fn=torch.nn.Tanh, lstm_hidden_size=lstm
    )
    if shared:  # sb3-contrib allows a shared LSTM only without the critic's own
        policy_kwargs.update(shared_lstm=True, enable_critic_lstm=False)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        env,
        policy_kwargs=policy_kwargs,
        seed=settings.seed,
        device="cpu",
        verbose=0,
        **extra,
    )
    return without_log_files(model)


def _rollout(model: RecurrentPPO) -> int:
    return model.n_steps * model.n_envs


def _learn_chunk(model: RecurrentPPO) -> None:
    """One more rollout and its update; the envs' episodes (and LSTM states) go on."""
    model.learn(total_timesteps=_rollout(model), reset_num_timesteps=False)


def _notes(model: RecurrentPPO) -> dict[str, Any]:
    return {
        "n_steps": model.n_steps,
        "batch_size": model.batch_size,
        "n_epochs": model.n_epochs,
        "lstm_hidden_size": model.policy.lstm_hidden_state_shape[-1],
        "shared_lstm": model.policy.shared_lstm,
        "vec_env": type(model.get_env()).__name__,
        "rollout_env_steps": _rollout(model),
        "torch_threads": torch.get_num_threads(),
        "sb3_contrib": sb3_contrib.__version__,
    }


def recurrent_act(model: RecurrentPPO) -> Act:
    """Greedy actions for ``run_episodes``, one LSTM state per evaluation env (each env
    plays one episode there, so an env's state is its episode's)."""
    states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    vec_env = model.get_env()
    normalizer = vec_env if isinstance(vec_env, VecNormalize) else None

    def act(obs: list[Any], envs: Sequence[object], masks: np.ndarray | None) -> np.ndarray:
        started = np.array([env not in states for env in envs])
        shape = model.policy.lstm_hidden_state_shape  # (layers, 1, size)
        zero = np.zeros((shape[0], shape[2]), dtype=np.float32)
        h = np.stack([states[env][0] if env in states else zero for env in envs], axis=1)
        c = np.stack([states[env][1] if env in states else zero for env in envs], axis=1)
        seen = np.stack(obs)
        if normalizer is not None:  # the statistics training has reached, not updated here
            seen = normalizer.normalize_obs(seen)
        actions, (h, c) = model.predict(
            seen, state=(h, c), episode_start=started, deterministic=True
        )
        for i, env in enumerate(envs):
            states[env] = (h[:, i], c[:, i])
        return np.asarray(actions)

    return act


def throughput(task: Task, seconds: float, settings: Settings) -> dict[str, Any]:
    """Env steps per second over whole rollouts (each with its update), after a warm-up."""
    model = _build(task, settings)
    _learn_chunk(model)
    start_steps, start = model.num_timesteps, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        _learn_chunk(model)
    result = throughput_result(
        SYSTEM, task, model.num_timesteps - start_steps, elapsed, settings, **_notes(model)
    )
    model.get_env().close()
    return result


def time_to_solve(task: Task, budget: Budget, settings: Settings) -> dict[str, Any]:
    """Train in rollout-sized chunks, evaluating greedily (clock paused) when due."""
    model = _build(task, settings)
    recorder = SolveRecorder(SYSTEM, task, budget, settings)
    while True:
        _learn_chunk(model)
        steps = model.num_timesteps
        returns = [float(ep["r"]) for ep in model.ep_info_buffer or []]
        train_return = float(np.mean(returns)) if returns else None
        if recorder.due(steps) and recorder.record(steps, recurrent_act(model), train_return):
            break
    model.get_env().close()
    return recorder.result(**_notes(model))
