"""launcher=pbs: render a PBS script (stage, run the ranks with mpiexec, summarize) and submit it with qsub."""

import logging
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from launchers.base import Launcher
from launchers.steps import Step, job_steps
from runner import cpu_bind
from runner.errors import SubmissionError
from runner.job import RunDir, run_dir_of
from runner.run_lock import RunLock
from runner.walltime import DEADLINE_VAR

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^\s*(\d+(?:\[\])?(?:\.[\w.-]+)?)\s*$", re.MULTILINE)


def _walltime(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def _step_line(step: Step, cfg: DictConfig, job_file: Path, python: str) -> str:
    argv = [python, "-u", "-m", step.module, str(job_file)]
    if step.per_node == 0:
        return shlex.join(argv)
    mpiexec = [cfg.launcher.mpiexec, "-n", str(step.processes(cfg.nodes)), "-ppn", str(step.per_node),
               *_cpu_bind(cfg, step.per_node), *cfg.launcher.mpiexec_args]
    return f'{shlex.join(mpiexec)} --hostfile "$PBS_NODEFILE" {shlex.join(argv)}'


def _cpu_bind(cfg: DictConfig, per_node: int) -> List[str]:
    """Each rank of a node on its own cores (runner/cpu_bind.py), unless launcher.mpiexec_args binds already."""
    blocks = cpu_bind.node_blocks(cfg, per_node)
    if blocks is None or any(arg.startswith("--cpu-bind") for arg in cfg.launcher.mpiexec_args):
        return []
    return ["--cpu-bind", cpu_bind.mpiexec_list(blocks)]


def _lock_step(action: str, job_file: Path, python: str) -> str:
    return shlex.join([python, "-u", "-m", "runner.run_lock", action, str(job_file)])


def render(cfg: DictConfig, job_file: Path, python: str = sys.executable) -> str:
    """The whole PBS script; every configured value is shell-quoted."""
    run = run_dir_of(job_file)
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"#PBS -N {re.sub(r'[^A-Za-z0-9_.-]', '_', 'runner-' + cfg.run_name)[:60]}",
        f"#PBS -l select={cfg.nodes}",
        f"#PBS -l walltime={_walltime(cfg.launcher.walltime_min)}",
        f"#PBS -l filesystems={q(cfg.launcher.filesystems)}",
        f"#PBS -l place={q(cfg.launcher.place)}",
        f"#PBS -q {q(cfg.launcher.queue)}",
        f"#PBS -A {q(cfg.launcher.account)}",
        "#PBS -j oe",
        "set -euo pipefail",
        f"export {DEADLINE_VAR}=$(( $(date +%s) + {cfg.launcher.walltime_min * 60} ))",
        # this start of the job, for every rank and step: a job rerun (qrerun, a node failure) keeps its PBS_JOBID,
        # and its first start's work-queue claims, Ray addresses and stats are not this start's
        'export RUNNER_ATTEMPT="${PBS_JOBID:-pbs}-$(date +%s)-$$"',
        *cfg.launcher.setup,
        f"cd {q(str(run.root))}",
        f"exec >> {q(str(run.job_log.relative_to(run.root)))} 2>&1",
        'echo "runner: job ${PBS_JOBID:-?} on $(sort -u "$PBS_NODEFILE" | wc -l) node(s)"',
        # the run's lock: this job's (handed over at submission, or taken now); released when the script ends
        f"trap {q(_lock_step('release', job_file, python))} EXIT",
        _lock_step("claim", job_file, python),
    ]
    lines += [_step_line(step, cfg, job_file, python) for step in job_steps(cfg)]
    return "\n".join(lines) + "\n"


def parse_job_id(output: str) -> str:
    match = JOB_ID.search(output)
    if not match:
        raise SubmissionError(f"qsub answered without a job id: {output.strip()!r}; check the qsub output above")
    return match.group(1)


class PbsLauncher(Launcher):
    script_name = "job.pbs"

    def render(self, job_file: Path) -> str:
        return render(self.cfg, job_file)

    def dry_run_hint(self, script: Path) -> str:
        return f" (submit it with: qsub {shlex.quote(str(script))})"

    def problem(self) -> str:
        qsub = self.cfg.launcher.qsub
        if self.cfg.dry_run or self.cfg.plan or shutil.which(qsub):
            return ""
        return f"launcher.qsub={qsub} is not found here: launch from a PBS login node, or set launcher.qsub=PATH"

    def start(self, job_file: Path, run: RunDir, lock: Optional[RunLock] = None) -> None:
        script = run.script(self.script_name)
        script.write_text(self.render(job_file))
        script.chmod(0o755)
        job_id = self.submit(self.cfg.launcher.qsub, script)
        self.record_job(run, "pbs", job_id, lock)
        log.info("submitted PBS job %s; results land in %s; progress: python -m runner.progress %s; "
                 "summary: python -m runner.summary %s", job_id, run.out, run.root, job_file)

    @staticmethod
    def submit(qsub: str, script: Path) -> str:
        try:
            proc = subprocess.run([qsub, str(script)], capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise SubmissionError(f"{qsub} not found: run on a PBS login node or set launcher.qsub=PATH") from None
        if proc.returncode != 0:
            raise SubmissionError(f"{qsub} {script} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return parse_job_id(proc.stdout)
