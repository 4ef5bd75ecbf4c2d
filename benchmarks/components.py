"""The parts of turnwise's pipeline timed alone: the ceiling and the transport profile.

``ceiling``: raw env steps/s of the batched Warehouse-v0 under a random policy (no
learning, no policy), and the policy's forward pass alone, at the same batch sizes,
each in this one process (one core).

``transport``: one default-sized rollout batch (``actors.envs_per_actor`` x
``actors.fragment_length`` rows) followed through the pipeline: collecting it (env
steps, policy forwards, bookkeeping and the Arrow build), moving it from an actor
through Ray's object store, and the learner's update on it. The per-batch times say
where a turnwise run spends its time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from turnwise.config import compose_config


def _rate(run: Callable[[], int], seconds: float, repeats: int = 3) -> float:
    """Median items/s of ``run`` (returns the items it did) over ``repeats`` timed runs,
    each of about ``seconds``; one untimed warm-up call first."""
    run()
    rates = []
    for _ in range(repeats):
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            done += run()
        rates.append(done / elapsed)
    return statistics.median(rates)


def ceiling(batch_sizes: tuple[int, ...], seconds: float) -> list[dict[str, Any]]:
    """Env-only and forward-only rates (steps/s, rows/s) per batch size."""
    from sims.warehouse import WarehouseVectorEnv
    from turnwise.policy import build_policy

    torch.set_num_threads(1)  # as in a rollout actor
    config = compose_config(["+exp=warehouse"])
    rows = []
    for n in batch_sizes:
        env = WarehouseVectorEnv(n, size="small")
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = rng.integers(0, env.single_action_space.n, size=(64, n))

        def steps(env=env, actions=actions, n=n) -> int:
            for a in actions:
                env.step(a)
            return len(actions) * n

        policy = build_policy(
            env.single_observation_space, env.single_action_space, config.learner.hidden_sizes
        )

        def forwards(policy=policy, obs=obs, n=n) -> int:
            for _ in range(16):
                policy.act(obs)
            return 16 * n

        rows.append(
            {
                "batch_size": n,
                "env_steps_per_second": _rate(steps, seconds),
                "forward_rows_per_second": _rate(forwards, seconds),
            }
        )
        env.close()
    return rows


def transport(batches: int) -> dict[str, Any]:
    """Per-batch seconds of each stage for the default ``+exp=warehouse`` batch."""
    import ray

    from actors.rollout import RolloutWorker
    from learner.ppo import PPOLearner

    config = compose_config(["+exp=warehouse"])
    worker = RolloutWorker(0, config.env, config.actors, config.learner, 0, None)
    learner = PPOLearner(
        worker.info.observation_space, worker.info.action_space, config.learner, "cpu"
    )
    weights = learner.weights()
    sample_s = _per_call(lambda: worker.sample(weights), batches)
    batch = worker.sample(weights)
    env_s, forward_s = _env_and_forward_share(worker, config.actors.fragment_length, batches)
    learn_s = _per_call(lambda: learner.update(batch), batches)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        holder = ray.remote(_BatchHolder).remote(batch)
        ray.get(holder.get.remote())  # warm-up
        move_s = _per_call(lambda: ray.get(holder.get.remote()), batches)
        empty_s = _per_call(lambda: ray.get(holder.ping.remote()), batches)
    finally:
        ray.shutdown()
    rows = batch.num_rows
    return {
        "batch_rows": rows,
        "batch_bytes": batch.nbytes,
        "seconds_per_batch": {
            "env": env_s,
            "inference": forward_s,
            "bookkeeping_and_arrow": max(sample_s - env_s - forward_s, 0.0),
            "collect_total": sample_s,
            "object_store": move_s,
            "actor_call_overhead": empty_s,
            "learner_update": learn_s,
        },
        "object_store_bytes_per_second": batch.nbytes / move_s,
        "learner_rows_per_second": rows / learn_s,
        "collect_rows_per_second": rows / sample_s,
        "transport_share_of_learner_time": move_s / learn_s,
    }


def _per_call(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _env_and_forward_share(worker, steps: int, repeats: int) -> tuple[float, float]:
    """Seconds per batch spent in ``envs.step`` and in the policy, at the worker's sizes."""
    envs, policy = worker.envs, worker.policy
    obs = worker.obs
    actions = np.random.default_rng(0).integers(0, 6, size=(steps, envs.num_envs))

    def env_only() -> None:
        for a in actions:
            envs.step(a)

    def forward_only() -> None:
        for _ in range(steps):
            policy.act(obs)

    return _per_call(env_only, repeats), _per_call(forward_only, repeats)


class _BatchHolder:
    """An actor that hands back the same batch: the object store's share alone."""

    def __init__(self, batch) -> None:
        self.batch = batch

    def get(self):
        return self.batch

    def ping(self) -> int:
        return 0
