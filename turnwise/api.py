"""The Python entry point: ``turnwise.train`` runs what ``python -m learner`` runs.

The overrides are the command line's (``+exp=NAME``, ``key=value``), checked the same
way before Ray starts (a bad key or value raises ValueError naming it); the run's
records land in ``run_dir`` (default ``runs/<date>_<time>``, as the command line's).

>>> import tempfile, turnwise
>>> result = turnwise.train(
...     ["+exp=cartpole", "train.env_steps=4096", "train.progress=false",
...      "monitoring.metrics_port=-1"],
...     run_dir=tempfile.mkdtemp(),
... )
>>> result.counters.env_steps >= 4096, (result.run_dir / "evaluations.jsonl").exists()
(True, True)
>>> turnwise.train(["actors.num_actors=0"])
Traceback (most recent call last):
ValueError: actors.num_actors=0: must be >= 1 (rollout actors)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from turnwise.config import compose_config

if TYPE_CHECKING:
    from learner.driver import TrainResult


def train(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> TrainResult:
    """Compose the configuration from ``overrides`` and train; SIGTERM or SIGINT end
    the run gracefully with a final checkpoint (in the main thread)."""
    config = compose_config(list(overrides))  # checked here: nothing has started yet
    from learner.driver import train as run  # late: a config error never pays for Ray

    if run_dir is None:
        run_dir = Path("runs") / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return run(config, run_dir)
