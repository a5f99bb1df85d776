"""launcher=slurm: submit the job through submitit; each Slurm task is one rank or host of the job.

Staging needs MPI across the tasks: the tasks start `python -m runner.staging` as a child, which joins the
job's MPI world through Slurm's PMI (srun --mpi=pmi2), while the task process itself never initializes MPI.
"""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from launchers.base import Launcher
from runner import cpu_bind
from runner.errors import JobFailedError, SubmissionError
from runner.job import RunDir, load, run_dir_of
from runner.mode import mode_of
from runner.staging import staging_of
from runner.run_lock import RunLock
from runner.summary import describe, summarize
from runner.walltime import DEADLINE_VAR, deadline_env

log = logging.getLogger(__name__)


def run_task(job_file: str) -> str:
    """What every Slurm task runs: stage (collectively, if configured), then this task's rank or host."""
    from runner import worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load(Path(job_file))
    if DEADLINE_VAR not in os.environ:
        os.environ.update(deadline_env(cfg.launcher.walltime_min))
    if staging_of(cfg).module:
        # Slurm's pmi2 plugin talks to each task over the inherited descriptor PMI_FD: keep it open in the child
        pmi_fd = os.environ.get("PMI_FD")
        subprocess.run([sys.executable, "-u", "-m", staging_of(cfg).module, job_file], check=True,
                       pass_fds=(int(pmi_fd),) if pmi_fd else ())
    worker.run(Path(job_file))
    return os.environ.get("SLURM_PROCID", "0")


def executor_for(cfg: DictConfig, folder: Path):
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    except RuntimeError as e:  # submitit finds no srun on PATH
        raise SubmissionError(f"launcher=slurm needs Slurm's commands here ({e}): launch from a Slurm login node, "
                              "or put srun and sbatch on PATH") from None
    launcher = cfg.launcher
    params = dict(
        name=f"runner-{cfg.run_name}",
        nodes=cfg.nodes,
        tasks_per_node=mode_of(cfg).procs_per_node(),
        timeout_min=launcher.walltime_min,
        cpus_per_task=launcher.cpus_per_task,
        slurm_setup=list(launcher.setup),
        slurm_srun_args=(["--mpi=pmi2"] if staging_of(cfg).module else []) + _cpu_bind(cfg),
        slurm_additional_parameters=dict(launcher.additional_parameters),
    )
    optional = {"slurm_partition": launcher.partition, "slurm_account": launcher.account,
                "gpus_per_node": cfg.cluster.gpus_per_node, "mem_gb": launcher.mem_gb}
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    return executor


def _cpu_bind(cfg: DictConfig) -> List[str]:
    """Each task of a node on its own cores (runner/cpu_bind.py), unless launcher.additional_parameters binds
    already. The masks name the node's cores: the allocation must hold them (whole nodes, as GPU jobs get)."""
    blocks = cpu_bind.node_blocks(cfg, mode_of(cfg).procs_per_node())
    if blocks is None or "cpu_bind" in cfg.launcher.additional_parameters:
        return []
    return [f"--cpu-bind={cpu_bind.srun_masks(blocks)}"]


def _submit(executor, job_file: Path):
    """The submitted job; sbatch's refusal (a wrong partition, account or option) as one line."""
    from submitit.core.utils import FailedJobError

    try:
        return executor.submit(run_task, str(job_file))
    except FailedJobError as e:  # sbatch's own words, e.g. "invalid partition specified: gpu"
        said = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise SubmissionError(f"sbatch refused the job: {said}; fix the launcher value it names (launcher.partition, "
                              "launcher.account, launcher.additional_parameters, ...) and launch again") from None


class SlurmLauncher(Launcher):
    script_name = "job.sbatch"

    def problem(self) -> str:
        # a plan needs neither; a dry run renders its script through submitit, which needs srun
        needed = [] if self.cfg.plan else ["srun"] if self.cfg.dry_run else ["srun", "sbatch"]
        missing = [name for name in needed if not shutil.which(name)]
        if not missing:
            return ""
        return (f"launcher=slurm needs {' and '.join(missing)}, not on PATH here: launch from a Slurm login node, or "
                "put Slurm's commands on PATH")

    def render(self, job_file: Path) -> str:
        """The sbatch script submitit would submit, rendered by submitit's own hook; no job is created."""
        slurm = executor_for(self.cfg, run_dir_of(job_file).slurm_folder)._executor
        return slurm._make_submission_file_text(slurm._submitit_command_str, uid="dry-run")

    def start(self, job_file: Path, run: RunDir, lock: Optional[RunLock] = None) -> None:
        cfg = self.cfg
        executor = executor_for(cfg, run.slurm_folder)
        job = _submit(executor, job_file)
        self.record_job(run, "slurm", str(job.job_id), lock)
        log.info("submitted Slurm job %s (logs in %s)", job.job_id, executor.folder)
        if cfg.launcher.wait:
            try:
                self._wait(job, run)
            finally:
                if lock is not None:
                    lock.release_job(str(job.job_id))
        else:
            log.info("progress: python -m runner.progress %s; when it ends: python -m runner.summary %s",
                     run.root, job_file)

    @staticmethod
    def _wait(job, run) -> None:
        try:
            job.results()
        except Exception as e:  # submitit re-raises the task's failure with its traceback
            raise JobFailedError(f"Slurm job {job.job_id} failed: {e}\nlogs: {job.paths.folder}") from None
        log.info("summary (%s):\n%s", run.summary_file, describe(summarize(run)))
