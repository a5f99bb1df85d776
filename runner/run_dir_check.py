"""A Hydra callback: the run directory (or a sweep's folder) must be one this user can make and write, checked
before Hydra makes it. Hydra makes it before the runner's main runs, so an unwritable place (a project folder
without write permission, a path through a file) was Hydra's own traceback instead of one line naming the fix."""

import sys
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class RunDirCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check(config, "hydra.run.dir", "hydra.run.dir=DIR (or run_name=NAME under outputs/runs/)")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check(config, "hydra.sweep.dir", "hydra.sweep.dir=DIR")


def _check(config: DictConfig, key: str, fix: str) -> None:
    HydraConfig.instance().set_config(config)  # the folder's name may use ${hydra:...}; Hydra sets it again
    folder = Path(str(OmegaConf.select(config, key)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # a folder that exists read-only passes mkdir
            pass
    except OSError as e:
        print(f"ConfigError: {key}={folder} cannot be made or written ({e.strerror or e}): set {fix} to a folder "
              "you can write", file=sys.stderr)
        sys.exit(2)
