"""Run one measurement of one system in this process and write its JSON record.

    python -m benchmarks.systems SYSTEM throughput TASK --seconds 20 --out r.json
    python -m benchmarks.systems SYSTEM solve TASK --seconds 300 --env-steps 3000000 \
        --eval-every 100000 --out r.json

SYSTEM is a key of ``SYSTEMS`` (turnwise, rllib, sb3, sb3_recurrent, sample_factory);
TASK is a key of ``common.TASKS``. The suite
(``python -m benchmarks``) runs every measurement this way, each in a fresh process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.systems.common import TASKS, Budget, Settings

SYSTEMS = {
    "turnwise": "benchmarks.systems.turnwise_system",
    "rllib": "benchmarks.systems.rllib_ppo",
    "sb3": "benchmarks.systems.sb3_ppo",
    "sb3_recurrent": "benchmarks.systems.sb3_recurrent_ppo",  # sb3-contrib's RecurrentPPO
    "sample_factory": "benchmarks.systems.sample_factory_appo",  # in its own venv (.venv-sf)
}


def json_object(text: str) -> dict:
    """``--extra``: a JSON object, or a usage error saying what was wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.systems")
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("measure", choices=["throughput", "solve"])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--seconds", type=float, required=True, help="window or time cap")
    parser.add_argument("--env-steps", type=int, default=10**9, help="solve: step cap")
    parser.add_argument("--eval-every", type=int, default=100_000, help="solve: env steps")
    parser.add_argument("--num-envs", type=int, default=Settings.num_envs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--extra", type=json_object, default={}, help="system-specific settings (JSON object)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings(num_envs=args.num_envs, seed=args.seed, extra=args.extra)
    module = importlib.import_module(SYSTEMS[args.system])
    task = TASKS[args.task]
    if args.measure == "throughput":
        result = module.throughput(task, args.seconds, settings)
    else:
        budget = Budget(args.seconds, args.env_steps, args.eval_every)
        result = module.time_to_solve(task, budget, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
