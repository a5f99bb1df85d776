"""python -m runner [group=option ...] [key=value ...]: compose the config and launch the job."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from runner.errors import RunnerError
from runner.schema import register_configs

log = logging.getLogger("runner")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from runner.app import launch

    try:
        launch(cfg)
    except RunnerError as e:
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)


if __name__ == "__main__":
    register_configs()
    main()
