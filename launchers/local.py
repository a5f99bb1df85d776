"""launcher=local: every rank or host of the job is a process of this machine; no scheduler."""

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from omegaconf import DictConfig

from launchers.base import Launcher
from launchers.steps import Step, job_steps
from runner.errors import JobFailedError
from runner.job import RunDir, run_dir_of
from runner.layout import layout_of
from runner.procs import die_with_parent
from runner.topology import NODE_IP_VAR
from runner.summary import describe, summarize
from runner.walltime import deadline_env

log = logging.getLogger(__name__)

# seconds a terminated rank or host gets to finish (a host stops its server: mode.stop_grace_s, 30 by default)
_RANK_STOP_S = 90


def rank_env(index: int, count: int, per_node: int) -> Dict[str, str]:
    """The runner's own placement variables (read by runner.topology) for process `index` of `count`; each
    "node" gets a loopback address of its own (127.0.0.2 up: Ray takes 127.0.0.1 for the machine's outside
    address), which its Ray node binds when an engine spans nodes."""
    local_size = per_node or 1
    return {
        "RUNNER_RANK": str(index),
        "RUNNER_LOCAL_RANK": str(index % local_size),
        "RUNNER_WORLD_SIZE": str(count),
        "RUNNER_LOCAL_SIZE": str(local_size),
        NODE_IP_VAR: f"127.0.{(index // local_size + 2) // 256}.{(index // local_size + 2) % 256}",
    }


def step_commands(step: Step, nodes: int, job_file: Path) -> List[Dict]:
    count = step.processes(nodes)
    return [{"env": rank_env(i, count, step.per_node), "argv": step.argv(job_file)} for i in range(count)]


def render_script(cfg: DictConfig, job_file: Path) -> str:
    """The shell script equivalent of what launch() runs (written by dry_run)."""
    run = run_dir_of(job_file)
    lines = ["#!/bin/bash", "set -euo pipefail"]
    for step in job_steps(cfg):
        for i, cmd in enumerate(step_commands(step, cfg.nodes, job_file)):
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cmd["env"].items())
            logfile = shlex.quote(str(run.step_log(step.name, i)))
            lines.append(f"{env} {shlex.join(cmd['argv'])} > {logfile} 2>&1 &")
        lines.append("wait")
    return "\n".join(lines) + "\n"


class LocalLauncher(Launcher):
    script_name = "job.sh"
    hosts_share_one_machine = True

    def render(self, job_file: Path) -> str:
        return render_script(self.cfg, job_file)

    def problem(self) -> str:
        cfg = self.cfg
        engines = layout_of(cfg).engines_in_job(cfg.nodes)
        if engines <= cfg.launcher.max_engines:
            return ""
        return (f"launcher=local would start {engines} vLLM engines on this machine (nodes={cfg.nodes}), more than "
                f"launcher.max_engines={cfg.launcher.max_engines}: for a cluster pick launcher=pbs or "
                "launcher=slurm; to run them all here, raise launcher.max_engines")

    def start(self, job_file: Path, run: RunDir, lock=None) -> None:
        """Run every step here; `lock` (the run's, held by this process for the whole run) needs nothing more."""
        cfg, started = self.cfg, time.monotonic()
        os.environ.update(deadline_env(cfg.launcher.walltime_min))
        os.environ.setdefault("RUNNER_ATTEMPT", f"local-{int(time.time())}-{os.getpid()}")  # fresh work-queue claims
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the ranks are stopped too
        for step in job_steps(cfg):
            if step.name != "summarize":
                self._run_step(step, cfg, job_file, run)
        summary = summarize(run, time.monotonic() - started)
        log.info("summary (%s):\n%s", run.summary_file, describe(summary))

    def _run_step(self, step: Step, cfg: DictConfig, job_file: Path, run: RunDir) -> None:
        procs = []
        for i, cmd in enumerate(step_commands(step, cfg.nodes, job_file)):
            logfile = run.step_log(step.name, i)
            with open(logfile, "ab") as out:
                # a rank dies with this process, even when it is SIGKILLed (a host's server guard then takes its
                # server down): no rank of a dead launch keeps writing into the run
                proc = subprocess.Popen(cmd["argv"], env={**os.environ, **cmd["env"]}, stdout=out,
                                        stderr=subprocess.STDOUT, preexec_fn=die_with_parent(signal.SIGKILL))
            procs.append((i, proc, logfile))
        log.info("%s: started %d process(es), logs in %s", step.name, len(procs), run.logs)
        try:
            failed = [(i, logfile, proc.wait()) for i, proc, logfile in procs if proc.wait() != 0]
        finally:  # interrupted: take the ranks down too (their finished lines are kept in the ledger)
            for _, proc, _ in procs:
                if proc.poll() is None:
                    proc.terminate()
            for _, proc, _ in procs:  # and let them stop their servers: they die at once when this process ends
                try:
                    proc.wait(timeout=_RANK_STOP_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if failed:
            raise JobFailedError(_failure_report(step, failed))


def _failure_report(step: Step, failed) -> str:
    parts = [f"{len(failed)} process(es) of step '{step.name}' failed:"]
    for i, logfile, code in failed:
        tail = Path(logfile).read_text(errors="replace").splitlines()[-20:]
        parts.append(f"  #{i} exit {code}, log {logfile}:\n    " + "\n    ".join(tail))
    return "\n".join(parts)
