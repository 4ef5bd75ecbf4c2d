"""``python -m evaluator RUN [--once [--record]]``: evaluate a run's checkpoints.

RUN is a run directory, a run store URI (``s3://bucket/prefix``, ``store.uri``) or a
checkpoint store.

With ``--once``: evaluate the latest checkpoint, print the results as one JSON
object, exit (status 1 with a message when there is no checkpoint); the run is left
as it was unless ``--record`` appends the row to its tables (and may move ``best``).
Without it: follow the run, evaluating every checkpoint marked for evaluation as it
appears, until interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from turnwise.checkpoint import load_checkpoint
from turnwise.checkpoint_store import open_store
from turnwise.config import EnvConfig, EvaluatorConfig, env_config_from_dict

log = logging.getLogger("evaluator")


def locate(target: str) -> tuple[str, str | None, dict]:
    """(checkpoint store URI, run store URI or None, run config dict) for a run (its
    directory or ``s3://`` run store: it holds ``config.json``) or a checkpoint store."""
    from turnwise.run_store import RunStore, is_s3

    path = Path(target)
    if not is_s3(target) and not path.is_dir():
        raise FileNotFoundError(f"{target} is neither a run directory nor a checkpoint store")
    run = RunStore(target)
    if run.exists("config.json"):
        config = run.read_json("config.json")
        return config["checkpoint"]["uri"] or run.uri_of("checkpoints"), run.uri, config
    manifest = load_checkpoint(open_store(target)).manifest
    return target, None, manifest["config"]


def evaluator_settings(config: dict) -> tuple[EnvConfig, EvaluatorConfig]:
    fields = {f.name for f in dataclasses.fields(EvaluatorConfig)}
    raw = {k: v for k, v in config.get("evaluator", {}).items() if k in fields}
    own = raw.pop("env", None)  # an empty id (or None, in older runs): the training env
    env = env_config_from_dict(own if own and own.get("id") else config["env"])
    return env, EvaluatorConfig(**raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluator", description=__doc__.split("\n")[0])
    parser.add_argument(
        "target", help="a run (directory or s3:// run store) or a checkpoint store (dir or s3://)"
    )
    parser.add_argument(
        "--once", action="store_true", help="evaluate the latest checkpoint, print JSON"
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="with --once: append the row to evaluations.jsonl (and alerts), promote best",
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between polls")
    args = parser.parse_args(argv)
    if args.record and not args.once:
        parser.error("--record goes with --once (following a run always records)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from evaluator.evaluator import Evaluator  # after argument parsing: --help stays fast
    from turnwise.checkpoint import CheckpointError

    try:
        store_uri, run_dir, config = locate(args.target)
        env, settings = evaluator_settings(config)
        evaluator = Evaluator(store_uri, env, settings, run_dir)
        if args.once:
            row = evaluator.evaluate(record=args.record)
            print(json.dumps(row, indent=2, sort_keys=True))
            return 0
    except (FileNotFoundError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    log.info("following %s (Ctrl-C to stop)", store_uri)
    try:
        while True:
            for row in evaluator.evaluate_pending():
                log.info("%s: eval return %.3f", row["checkpoint"], row["eval_return"])
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
