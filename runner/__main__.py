"""python -m runner [group=option ...] [key=value ...]: compose the config and launch the job."""

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner.errors import RunnerError
from runner.schema import register_configs

log = logging.getLogger("runner")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from runner.app import launch

    try:
        launch(cfg)
        if cfg.plan:  # the plan made nothing: Hydra's own folder goes again
            _remove_if_only_hydras()
    except RunnerError as e:
        log.error("%s: %s", type(e).__name__, e)
        _remove_if_only_hydras()
        sys.exit(2)


def _remove_if_only_hydras() -> None:
    """Hydra makes the run directory (its .hydra/ and the job's log) before main runs; a launch refused before
    the runner wrote anything there (or a plan=true) takes it away again, so it leaves no empty run directory."""
    hydra = HydraConfig.get()
    out = Path(hydra.runtime.output_dir)
    if out.is_dir() and {p.name for p in out.iterdir()} <= {".hydra", f"{hydra.job.name}.log"}:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    register_configs()
    main()
