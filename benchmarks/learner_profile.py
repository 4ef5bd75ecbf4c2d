"""Where the learner's update spends its time, on batches a rollout actor recorded.

``python -m benchmarks.learner_profile [--batches N] [--repeats R] [--cprofile]``
samples ``N`` Warehouse-v0 batches in-process (``+exp=warehouse``'s actor and learner
settings), then times ``PPOLearner.update`` on them, cycling ``R`` times, on one torch
thread as the learner actor runs: median ms per batch, wall-clock and thread CPU (the
CPU time is what other load on the machine disturbs least), for the whole update and
for its stages (Arrow -> tensors, normalizer, value targets, the epochs of minibatch
steps), and the actor's ``sample()``. ``--cprofile`` prints the top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from actors.rollout import RolloutWorker
from learner.ppo import PPOLearner, to_rollout
from turnwise.config import compose_config


def record(batches: int, overrides: Sequence[str] = ()):
    config = compose_config(["+exp=warehouse", *overrides])
    worker = RolloutWorker(0, config.env, config.actors, config.learner, 0, None)
    learner = PPOLearner(
        worker.info.observation_space, worker.info.action_space, config.learner, "cpu"
    )
    samples = [worker.sample(learner.weights())]  # the first: warm-up
    sample_ms = ms(lambda: samples.append(worker.sample(learner.weights())), batches)
    return config, worker, learner, samples[1:], sample_ms


def ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and thread-CPU ms of ``fn``."""
    wall, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.thread_time()
        fn()
        wall.append(1e3 * (time.perf_counter() - started))
        cpu.append(1e3 * (time.thread_time() - cpu_started))
    return statistics.median(wall), statistics.median(cpu)


def stages(learner: PPOLearner, batch, repeats: int) -> dict[str, tuple[float, float]]:
    """Median ms (wall, CPU) of each stage of one update, run as update() runs them."""
    data = to_rollout(batch, learner.device)
    steps, envs, _ = data.obs.shape
    targets, advantages, _ = learner._targets(data)
    times = {
        "to_rollout": ms(lambda: to_rollout(batch, learner.device), repeats),
        "normalizer": ms(
            lambda: learner.model.normalizer.update(data.obs.reshape(steps * envs, -1)), repeats
        ),
        "targets": ms(lambda: learner._targets(data), repeats),
        "optimize": ms(lambda: learner._optimize(data, targets, advantages), repeats),
        "update": ms(lambda: learner.update(batch), repeats),
    }
    return times


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learner_profile")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. learner.epochs=1")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    _, worker, learner, samples, sample_ms = record(args.batches, args.overrides)
    print(
        f"batch: {samples[0].num_rows} rows; sample(): {sample_ms[0]:.1f} ms wall, "
        f"{sample_ms[1]:.1f} ms CPU"
    )
    for _ in range(3):  # warm up
        learner.update(samples[0])
    result = stages(learner, samples[0], args.repeats)
    for name, (wall, cpu) in result.items():
        print(f"{name:>10}: {wall:7.2f} ms wall, {cpu:7.2f} ms CPU")
    if args.cprofile:
        profile = cProfile.Profile()
        profile.enable()
        for k in range(args.repeats):
            learner.update(samples[k % len(samples)])
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(5):
            worker.sample(learner.weights())
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
