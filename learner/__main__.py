"""``python -m learner +exp=warehouse``: train a policy (see conf/ for every option)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from turnwise.config import check_command_line, register_configs, to_config

if TYPE_CHECKING:
    from learner.driver import Trainer

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from learner.driver import Trainer, run_trainer  # late: a config error never pays for Ray
    from learner.progress import final_line

    logging.getLogger("learner").setLevel(logging.INFO)
    try:  # everything checked before Ray starts: a clear message, no traceback
        trainer = Trainer(to_config(cfg), Path(HydraConfig.get().runtime.output_dir))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    result = run_trainer(trainer)
    line = final_line(result.counters.env_steps, result.train_return, last_evaluation(trainer))
    print(f"{line}, checkpoint {result.checkpoint}")


def last_evaluation(trainer: Trainer) -> dict[str, Any] | None:
    """The latest evaluation row this run collected, if any."""
    rows = trainer.evaluator.results if trainer.evaluator is not None else []
    return max(rows, key=lambda row: row["env_steps"], default=None)


if __name__ == "__main__":
    try:  # every key, type and value, before Hydra runs and Ray is imported
        check_command_line(sys.argv[1:])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    main()
