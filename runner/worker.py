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

from runner import job
from runner.errors import RunnerError
from runner.mode import Mode, mode_of
from runner.staging import staging_of
from runner.stats import WorkerStats
from runner.stats import write as write_stats
from runner.topology import Placement, discover

log = logging.getLogger("runner.worker")


def pin_environment(cfg: DictConfig, mode: Mode, placement: Placement) -> None:
    """The machine's variables and this worker's devices, set before vLLM is imported."""
    os.environ.update({k: str(v) for k, v in cfg.cluster.env.items()})
    os.environ.update(mode.device_env(placement))


def run(job_file: Path) -> None:
    cfg = job.load(job_file)
    run_dir = job.run_dir_of(job_file)
    placement, mode = discover(), mode_of(cfg)
    pin_environment(cfg, mode, placement)
    model_path = staging_of(cfg).model_path_for_workers()
    log.info("rank %d/%d local %d on %s, model %s", placement.rank, placement.world_size, placement.local_rank,
             placement.hostname, model_path)
    stats = WorkerStats()
    try:
        stats = mode.run(run_dir, placement, model_path, stats)
    finally:  # also a failed or cancelled worker's counts so far; unnamed: it stopped before its mode began
        if stats.name:
            write_stats(run_dir, stats)


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
