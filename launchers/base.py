"""The seam of the launcher group: how a job's steps (launchers.steps) reach the nodes. A new launcher is a
subclass (in its own module), its schema in runner/schema/launcher.py and its YAML in conf/launcher/."""

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from runner.job import RunDir, run_dir_of
from runner.run_lock import RunLock, holder

log = logging.getLogger(__name__)


class Launcher(ABC):
    # the file, in the run directory, that a dry run writes (what the launcher would run or submit)
    script_name: str = "job.sh"
    # every host of the job is a process of one machine (their servers must not race for one port)
    hosts_share_one_machine: bool = False

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def launch(self, job_file: Path, lock: Optional[RunLock] = None) -> None:
        """Start the job (under dry_run: only write its script). `lock`, the run's, is held by this process: a
        launcher whose job outlives it hands the lock to the job (record_job)."""
        run = run_dir_of(job_file)
        if self.cfg.dry_run:
            script = run.script(self.script_name)
            script.write_text(self.render(job_file))
            script.chmod(0o755)
            log.info("dry run: wrote %s%s", script, self.dry_run_hint(script))
            return
        self.start(job_file, run, lock)

    @abstractmethod
    def render(self, job_file: Path) -> str:
        """The script that runs or submits the job."""

    @abstractmethod
    def start(self, job_file: Path, run: RunDir, lock: Optional[RunLock]) -> None:
        """Run the job here, or submit it."""

    def dry_run_hint(self, script: Path) -> str:
        return ""

    def problem(self) -> str:
        """Why this launcher cannot run the job as configured ("" when it can), checked before anything is made."""
        return ""

    @staticmethod
    def record_job(run: RunDir, scheduler: str, job_id: str, lock: Optional[RunLock]) -> None:
        """Write <scheduler>_job_id into the run and hand the run's lock to the queued job (a second launch asks
        the scheduler about it)."""
        run.job_id_file(scheduler).write_text(f"{job_id}\n")
        if lock is not None:
            lock.hand_over(holder(scheduler, job_id))


def launcher_of(cfg: DictConfig) -> Launcher:
    """The job's launcher option (its `_target_`), built with the job's config."""
    from runner.options import build

    return build(cfg, "launcher", Launcher)
