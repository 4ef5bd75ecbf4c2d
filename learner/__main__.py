"""``python -m learner +exp=warehouse``: train a policy (see conf/ for every option)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from turnwise.config import check_command_line, register_configs, to_config

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from learner.driver import Trainer, run_trainer  # late: a config error never pays for Ray

    logging.getLogger("learner").setLevel(logging.INFO)
    try:  # everything checked before Ray starts: a clear message, no traceback
        trainer = Trainer(to_config(cfg), Path(HydraConfig.get().runtime.output_dir))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    result = run_trainer(trainer)
    print(
        f"done: {result.counters.env_steps:,} env steps, train return "
        f"{result.train_return:.2f}, checkpoint {result.checkpoint}"
    )


if __name__ == "__main__":
    try:  # every key, type and value, before Hydra runs and Ray is imported
        check_command_line(sys.argv[1:])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    main()
