"""The steps of every job, whatever launches it: stage the weights, run the ranks or hosts, summarize."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

from omegaconf import DictConfig

from runner.mode import mode_of
from runner.staging import staging_of


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


def job_steps(cfg: DictConfig) -> List[Step]:
    """The staging option's step (if it has one), the mode's workers, the summary."""
    steps = []
    stage = staging_of(cfg).module
    if stage:
        steps.append(Step("stage", stage, 1))
    steps.append(Step("run", "runner.worker", mode_of(cfg).procs_per_node()))
    steps.append(Step("summarize", "runner.summary", 0))
    return steps
