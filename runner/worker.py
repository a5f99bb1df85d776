"""python -m runner.worker JOB_FILE: one rank (per_tile) or one host (server_per_node) of a job.

Started by every launcher the same way; where it sits in the job comes from the environment (topology).
"""

import logging
import os
import signal
import sys
from pathlib import Path
from typing import List

from omegaconf import DictConfig

from runner import job, staging
from runner.devices import device_env
from runner.errors import RunnerError
from runner.topology import Placement, discover

log = logging.getLogger("runner.worker")


def pin_environment(cfg: DictConfig, placement: Placement) -> None:
    """The machine's variables and this rank's device, set before vLLM is imported."""
    os.environ.update({k: str(v) for k, v in cfg.cluster.env.items()})
    if cfg.mode.name == "per_tile":
        c = cfg.cluster
        os.environ.update(device_env(placement.local_rank, c.accelerator, c.gpus_per_node, c.tiles_per_gpu))


def run(job_file: Path) -> None:
    cfg = job.load(job_file)
    run_dir = job.run_dir_of(job_file)
    placement = discover()
    pin_environment(cfg, placement)
    model_path = staging.model_path_for_workers(cfg)
    log.info("rank %d/%d local %d on %s, model %s", placement.rank, placement.world_size, placement.local_rank,
             placement.hostname, model_path)
    if cfg.mode.name == "per_tile":
        from runner.per_tile import run_rank

        run_rank(cfg, run_dir, placement, model_path)
    else:
        from runner.server_per_node import run_host

        run_host(cfg, run_dir, placement, model_path)


def _exit_on_sigterm(signum, frame) -> None:
    """A cancelled job (scancel, qdel, the local launcher stopping) unwinds: the `finally` blocks stop this
    host's `vllm serve` (its own process group, which the signal does not reach) and record what was done."""
    raise SystemExit(128 + signum)


def main(argv: List[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        run(Path(argv[0]))
    except RunnerError as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
