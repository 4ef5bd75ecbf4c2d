"""RLlib's PPO (new API stack, Ray 2.60) behind the benchmark interface.

RLlib's default PPO hyperparameters (train batch 4000, minibatch 128, 30 epochs, ...)
except the model, an MLP of ``settings.hidden_sizes`` with tanh like turnwise's. The env
is registered through RLlib's registry and built by ``task.make_env()``; the learner
runs in this process on the CPU. ``settings.extra`` is passed to ``PPOConfig.training``
(``train_batch_size_per_learner``, ``minibatch_size``, ``num_epochs``...), except three
adapter keys: ``num_env_runners`` (default 0: sampling in this process; 1 was slower
on 2 cores), ``normalize`` (default false; true: RLlib's ``MeanStdFilter`` env-to-module
connector, clipped at 10, its running statistics applied to the evaluation's
observations too) and ``torch_threads`` (default 1, as Ray gives its own workers and as
the SB3 adapter does: on this 2-core machine torch's default of 2 threads ran RLlib's PPO
update ~10x slower whenever another process was busy).

``matched_extra(experiment)`` is the ``settings.extra`` (and ``num_envs``) giving RLlib
turnwise's ``+exp=<experiment>`` settings; ``UNMATCHED`` says what it cannot match.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

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

SYSTEM = "rllib"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Sampling in this process: PPO samples, then learns, so on 2 cores a separate env runner
# only adds IPC (Warehouse: ~820 vs ~630 env steps/s; start-up ~7 s vs ~15 s).
DEFAULT_ENV_RUNNERS = 0
UNMATCHED = unmatched_by_alternating_ppo("MeanStdFilter")


MATCHED_KEYWORDS = {  # PPOConfig.training keyword (or adapter key) -> common.Matched field
    "num_envs": "num_envs",
    "train_batch_size_per_learner": "rows_per_update",
    "minibatch_size": "minibatch_size",
    "num_epochs": "epochs",
    "lr": "lr",
    "gamma": "gamma",
    "lambda_": "gae_lambda",
    "clip_param": "clip",
    "entropy_coeff": "entropy_coef",
    "vf_loss_coeff": "value_coef",
    "grad_clip": "max_grad_norm",
    "normalize": "normalize_observations",
}


def matched_extra(experiment: str = "warehouse") -> dict[str, Any]:
    """``PPOConfig.training`` arguments (and ``num_envs``) for ``+exp=<experiment>``'s
    settings; RLlib's KL penalty and value clipping off, as turnwise has neither."""
    keywords = matched(experiment).keywords(MATCHED_KEYWORDS)
    return {**keywords, "use_kl_loss": False, "vf_clip_param": 1e9}


def _quiet() -> None:
    """Silence RLlib's deprecation warnings and chatty loggers (where it is easy)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", module="ray")
    import ray.rllib  # noqa: F401  (importing Ray resets its loggers' levels)

    for name in ("ray", "ray.rllib", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def _algo(
    task: Task, settings: Settings, overrides: dict[str, Any] | None = None
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A built PPO algorithm (on a private local Ray) and the notes describing it."""
    _quiet()
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.connectors.env_to_module import MeanStdFilter
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    extra = dict(settings.extra)
    num_env_runners = int(extra.pop("num_env_runners", DEFAULT_ENV_RUNNERS))
    normalize = bool(extra.pop("normalize", False))
    torch.set_num_threads(int(extra.pop("torch_threads", 1)))
    started = time.perf_counter()
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        # Env runner processes must import ``sims`` (Warehouse-v0) from the repo root.
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "PYTHONWARNINGS": "ignore"}},
    )
    try:
        env_name = f"bench-{task.name}"
        register_env(env_name, lambda _cfg: task.make_env())
        config = (
            PPOConfig()
            .environment(env_name)
            .env_runners(
                num_env_runners=num_env_runners,
                num_envs_per_env_runner=max(1, settings.num_envs // max(1, num_env_runners)),
                env_to_module_connector=(
                    (lambda *_: MeanStdFilter(clip_by_value=10.0)) if normalize else None
                ),
            )
            .rl_module(
                model_config=DefaultModelConfig(
                    fcnet_hiddens=list(settings.hidden_sizes), fcnet_activation="tanh"
                )
            )
            .training(**{**extra, **(overrides or {})})
            .debugging(seed=settings.seed, log_level="ERROR")
        )
        algo = config.build_algo()
        notes = {
            "start_up_seconds": time.perf_counter() - started,  # ray.init + build
            "ray": ray.__version__,
            "num_env_runners": num_env_runners,
            "num_envs_per_env_runner": config.num_envs_per_env_runner,
            "train_batch_size": config.train_batch_size_per_learner,
            "minibatch_size": config.minibatch_size,
            "num_epochs": config.num_epochs,
            "normalize": normalize,
            "torch_threads": torch.get_num_threads(),
        }
        try:
            yield algo, notes
        finally:
            algo.stop()
    finally:
        ray.shutdown()


def _env_steps(result: dict[str, Any]) -> int:
    """Lifetime env steps sampled, all of which PPO's learner trains on (on-policy)."""
    return int(result["env_runners"]["num_env_steps_sampled_lifetime"])


def _train_return(result: dict[str, Any]) -> float | None:
    """RLlib's mean return over recent training episodes (None before any finished)."""
    value = result.get("env_runners", {}).get("episode_return_mean")
    return None if value is None or math.isnan(value) else float(value)


def throughput(task: Task, seconds: float, settings: Settings) -> dict[str, Any]:
    """Env steps/s trained over ``train()`` calls filling ``seconds`` (build and a
    warm-up iteration excluded; the window ends at the first iteration past it)."""
    with _algo(task, settings) as (algo, notes):
        steps0 = _env_steps(algo.train())
        started = time.perf_counter()
        iterations = 0
        while True:
            steps = _env_steps(algo.train())
            iterations += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
    return throughput_result(
        SYSTEM,
        task,
        steps - steps0,
        elapsed,
        settings,
        iterations=iterations,
        **notes,
    )


def _small_budget_batch(budget: Budget, settings: Settings) -> int | None:
    """A train batch of ``budget.env_steps`` when that is less than RLlib's default one
    (a unit test's tiny budget), else None; an explicit batch size in ``extra`` wins."""
    _quiet()
    from ray.rllib.algorithms.ppo import PPOConfig

    defaults = PPOConfig()
    explicit = {"train_batch_size", "train_batch_size_per_learner"} & settings.extra.keys()
    if explicit or defaults.train_batch_size_per_learner <= budget.env_steps:
        return None
    minibatch = int(settings.extra.get("minibatch_size", defaults.minibatch_size))
    return max(budget.env_steps, minibatch)


def _seen(algo: Any, obs: np.ndarray) -> np.ndarray:
    """Observations as the module saw them in training: through the local env runner's
    MeanStdFilter (its statistics so far, not updated here), if there is one."""
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    pipeline = algo.env_runner._env_to_module  # the local runner's env-to-module connectors
    for connector in pipeline.connectors:
        if isinstance(connector, MeanStdFilter) and connector._filters:
            (running,) = connector._filters.values()  # one agent
            return running(obs, update=False)
    return obs


def time_to_solve(task: Task, budget: Budget, settings: Settings) -> dict[str, Any]:
    """Train until solved or out of budget, evaluating the current greedy policy."""
    batch = _small_budget_batch(budget, settings)
    overrides = None if batch is None else {"train_batch_size_per_learner": batch}
    with _algo(task, settings, overrides) as (algo, notes):
        recorder = SolveRecorder(SYSTEM, task, budget, settings)

        def predict(obs: np.ndarray) -> np.ndarray:
            # The local env runner's module: synced from the learner after every train().
            module = algo.get_module()
            obs = _seen(algo, obs)
            with torch.no_grad():
                out = module.forward_inference({"obs": torch.as_tensor(obs, dtype=torch.float32)})
                dist_cls = module.get_inference_action_dist_cls()
                dist = dist_cls.from_logits(out["action_dist_inputs"]).to_deterministic()
                return dist.sample().numpy()  # argmax (Discrete), the mean (Box)

        act = batch_act(predict)
        while True:
            result = algo.train()
            steps = _env_steps(result)
            if recorder.due(steps) and recorder.record(steps, act, _train_return(result)):
                break
    return recorder.result(train_batch_shrunk=batch is not None, **notes)
