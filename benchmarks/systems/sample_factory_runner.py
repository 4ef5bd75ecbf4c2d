"""Sample Factory 2's APPO on a turnwise task: the side of ``sample_factory_appo`` that
runs in Sample Factory's own venv (``benchmarks.sample_factory_env``), as a script:

    .venv-sf/bin/python benchmarks/systems/sample_factory_runner.py \
        --env-id Warehouse-v0 --env-kwargs '{"size": "small"}' --progress P.jsonl \
        --save-every 100000 -- --train_dir DIR --experiment sf ...

Everything after ``--`` is Sample Factory's own command line. The runner adds four
things to a stock ``run_rl``:

- the env: ``gymnasium.make(env_id, **env_kwargs)``, with ``sims`` importable under
  gymnasium 0.29 (its ``sims.warehouse`` package imports the vector env, which needs
  gymnasium 1.x's ``AutoresetMode``; the single env does not, so the package's
  ``__init__`` is skipped);
- an observer that writes one JSON line per training iteration to ``--progress``
  (wall time, the env steps the learner has consumed, the mean training return) and
  asks the learner for a checkpoint each ``--save-every`` env steps: the adapter
  evaluates those checkpoints. Sample Factory 2.1.1's ``--train_for_seconds`` never
  fires (``Runner.total_train_seconds`` is never advanced), so the adapter stops the
  run itself, and the run kills itself if the adapter dies;
- the env's spaces read in the runner's process, not in a process spawned for it;
- a fix for Sample Factory 2.1.1's summaries under V-trace: ``_record_summaries``
  reads the minibatch's GAE ``advantages``, which V-trace never makes (fixed upstream
  by PR #278, unreleased); the V-trace advantages are given instead.

Module-level code runs in every process Sample Factory spawns (spawn re-imports the
main script as ``__mp_main__``), so the env and the fix are there in each.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import signal
import sys
import time
import types
from pathlib import Path

import gymnasium
from sample_factory.algo.learning.learner import Learner
from sample_factory.algo.runners import runner as runner_module
from sample_factory.algo.runners.runner import AlgoObserver, Runner
from sample_factory.algo.utils.env_info import EnvInfo, extract_env_info
from sample_factory.algo.utils.make_env import make_env_func_batched
from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
from sample_factory.envs.env_utils import register_env
from sample_factory.train import make_runner


def import_sims() -> None:
    """Import ``sims`` (registers its envs) without ``sims.warehouse``'s ``__init__``
    where the installed gymnasium lacks what ``sims.warehouse.vector`` needs."""
    if "sims" in sys.modules:
        return
    if not hasattr(gymnasium.vector, "AutoresetMode"):
        root = Path(importlib.util.find_spec("sims").origin).parent
        package = types.ModuleType("sims.warehouse")
        package.__path__ = [str(root / "warehouse")]
        sys.modules["sims.warehouse"] = package
    import sims  # noqa: F401


def _record_summaries_vtrace_safe(original):
    def record(self, train_loop_vars):
        if "advantages" not in train_loop_vars.mb:
            train_loop_vars.mb["advantages"] = train_loop_vars.adv
        return original(self, train_loop_vars)

    return record


if not getattr(Learner._record_summaries, "_turnwise_fixed", False):
    Learner._record_summaries = _record_summaries_vtrace_safe(Learner._record_summaries)
    Learner._record_summaries._turnwise_fixed = True


def make_env(full_env_name, cfg=None, env_config=None, render_mode=None, env_kwargs=None):
    """Sample Factory's env factory (module level: the spawned workers unpickle it)."""
    import_sims()
    return gymnasium.make(full_env_name, render_mode=render_mode, **(env_kwargs or {}))


def env_info_in_this_process(cfg) -> EnvInfo:
    """The spaces of the env, read from one made here: Sample Factory spawns a process
    for this (one more torch import at start-up, ~30 s on a loaded 2-core machine)."""
    env = make_env_func_batched(cfg, env_config=None)
    try:
        return extract_env_info(env, cfg)
    finally:
        env.close()


runner_module.obtain_env_info_in_a_separate_process = env_info_in_this_process


class Progress(AlgoObserver):
    """Reports each training iteration and asks for a checkpoint every ``save_every``
    env steps (0: never) and whenever the file ``save_request`` appears."""

    def __init__(self, path: Path, save_every: int, save_request: Path | None) -> None:
        self.file = path.open("a", buffering=1)
        self.save_every = save_every
        self.next_save = save_every
        self.save_request = save_request
        self.parent = os.getppid()

    def on_training_step(self, runner: Runner, training_iteration_since_resume: int) -> None:
        if os.getppid() != self.parent:  # the adapter is gone: end the whole run
            os.killpg(os.getpgrp(), signal.SIGKILL)
        env_steps = sum(runner.env_steps.values())
        rewards = (runner.policy_avg_stats.get("reward") or [[]])[0]  # one deque per policy
        line = {
            "time": time.time(),
            "env_steps": env_steps,
            "train_return": float(sum(rewards) / len(rewards)) if rewards else None,
        }
        self.file.write(json.dumps(line) + "\n")
        save = bool(self.save_every) and env_steps >= self.next_save
        while self.save_every and self.next_save <= env_steps:
            self.next_save += self.save_every
        if self.save_request is not None and self.save_request.exists():
            self.save_request.unlink()
            save = True
        if save:
            runner._save_policy()  # the learner writes checkpoint_p0/checkpoint_*.pth


def main(argv: list[str]) -> int:
    ours, sf_argv = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--env-kwargs", type=json.loads, default={})
    parser.add_argument("--progress", type=Path, required=True)
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--save-request", type=Path, default=None)
    args = parser.parse_args(ours)

    register_env(args.env_id, functools.partial(make_env, env_kwargs=args.env_kwargs))
    sf_argv = ["--env", args.env_id, *sf_argv]
    sf_parser, _ = parse_sf_args(argv=sf_argv)
    cfg = parse_full_cfg(sf_parser, sf_argv)
    cfg, runner = make_runner(cfg)
    runner.register_observer(Progress(args.progress, args.save_every, args.save_request))
    status = runner.init()
    if status == 0:
        status = runner.run()
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
