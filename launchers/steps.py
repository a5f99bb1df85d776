"""The steps of every job, whatever launches it: stage the weights, run the ranks or hosts, summarize."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

from omegaconf import DictConfig


@dataclass(frozen=True)
class Step:
    # stage | run | summarize
    name: str
    # started as `python -m MODULE JOB_FILE`
    module: str
    # processes per node; 0: a single process for the whole job
    per_node: int

    def argv(self, job_file: Path) -> List[str]:
        return [sys.executable, "-u", "-m", self.module, str(job_file)]

    def processes(self, nodes: int) -> int:
        return nodes * self.per_node if self.per_node else 1


def procs_per_node(cfg: DictConfig) -> int:
    """per_tile: one rank per GPU/tile; server_per_node: one host process per node."""
    return cfg.cluster.ranks_per_node if cfg.mode.name == "per_tile" else 1


def job_steps(cfg: DictConfig) -> List[Step]:
    steps = []
    if cfg.staging.name != "none":
        steps.append(Step("stage", "runner.staging", 1))
    steps.append(Step("run", "runner.worker", procs_per_node(cfg)))
    steps.append(Step("summarize", "runner.summary", 0))
    return steps
