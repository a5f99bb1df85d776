"""The behaviours every launcher must show (as Hydra's LauncherTestSuite): one base class whose tests each
launcher's subclass inherits; the subclass names the launcher and fills the hooks (how a job is started and
waited for where a scheduler is faked or real). Everything goes through the CLI, `python -m runner
launcher=NAME ...`, so the suite depends on nothing of the runner but RunLock reading the lock's files.

- a dry run writes the job's script and starts nothing: no record, no stats, no process, no submission;
- a real run (or a submitted job run to its end) answers every line once and writes summary.json, and no
  process of it is left;
- the run's lock is held while the job runs (a second launch of the same run is refused, job.yaml untouched)
  and released after, also after a failed job;
- the walltime deadline reaches the workers: with less time left than mode.walltime_margin_s a rank starts
  nothing (no engine, no answer) and the job fails.
"""

import contextlib
import json
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from helpers.cli import run_runner, start_runner
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, tagged_env, wait_for
from runner.run_lock import RunLock

# seconds a job (engine start included) may take on this 2-core machine
JOB_S = 900


@dataclass
class Job:
    """A started job: the process the test waits for, and who must hold the run's lock while it runs."""
    process: subprocess.Popen
    # asked while the job runs: ("local", pid of `python -m runner`) or (scheduler, job id)
    holder: Callable[[], tuple]

    def wait(self) -> int:
        return self.process.wait(timeout=JOB_S)


@dataclass
class Outcome:
    run: Path
    args: List[str]
    returncode: int
    # what was seen while the job ran
    holder: Optional[dict] = None
    expected_holder: tuple = ()
    second_launch: Optional[subprocess.CompletedProcess] = None
    job_yaml_untouched: bool = False
    left_behind: Dict[int, list] = field(default_factory=dict)


def lock_holder(run: Path) -> Optional[dict]:
    """The run lock's live holder record, None when it is released (or was never taken)."""
    return RunLock(run)._newest()[1]


class LauncherSuite:
    # launcher=NAME
    launcher: str = ""
    # the file a dry run writes into the run directory
    script: str = ""
    # per_tile inputs of the real run: one file per rank
    inputs: Dict[str, List[str]] = {"0.in": ["What is the capital of France?", "Name a fruit."]}
    # overrides of the real run (ranks, walltime, ...)
    run_overrides: tuple = ("cluster.ranks_per_node=1",)

    # hooks -------------------------------------------------------------------------------------------------

    def skip_reason(self) -> str:
        """Why jobs cannot run here (no scheduler); a dry run needs none."""
        return ""

    def launcher_args(self, tmp: Path) -> List[str]:
        """What this launcher needs on the command line (queue, account, a faked qsub, ...)."""
        return []

    def env(self, tmp: Path) -> dict:
        """Environment of every launch (PATH with faked scheduler binaries)."""
        return {}

    def start(self, args: List[str], tmp: Path, env: dict) -> Job:
        """Start the job in the background; the suite waits for Job.process. By default the CLI itself."""
        process = start_runner(args, tmp / "launch.err", env)
        return Job(process, lambda: ("local", process.pid))

    def nothing_submitted(self, tmp: Path, run: Path) -> bool:
        """After a dry run: no job was handed to a scheduler."""
        return True

    # the suite ---------------------------------------------------------------------------------------------

    def args(self, tmp: Path, inputs: Path, run: Path, *extra: str) -> List[str]:
        return [f"launcher={self.launcher}", *self.launcher_args(tmp), f"input.path={inputs}",
                "mode.assign=by_rank",
                f"hydra.run.dir={run}", "sampling.max_tokens=8", *extra]

    def job_runs(self, tag: str) -> bool:
        """The job's work has begun: a process of it answers lines."""
        return any("runner.worker" in argv for argv in run_processes(tag).values())

    @pytest.fixture(scope="class")
    @classmethod
    def real_run(cls, tmp_path_factory) -> Outcome:
        """One real job, to its end; the lock is looked at (and a second launch tried) while a worker runs."""
        return cls()._real_run(tmp_path_factory)

    def _real_run(self, tmp_path_factory) -> Outcome:
        if self.skip_reason():
            pytest.skip(self.skip_reason())
        tmp = tmp_path_factory.mktemp(self.launcher)
        inputs, run, tag = write_inputs(tmp / "in", self.inputs), tmp / "run", uuid.uuid4().hex
        args = self.args(tmp, inputs, run, *self.run_overrides)
        job = self.start(args, tmp, {**self.env(tmp), **tagged_env(tag)})
        outcome = Outcome(run, args, returncode=-1)
        try:
            if wait_for(lambda: job.process.poll() is not None or self.job_runs(tag), JOB_S, 0.5) is True:
                self._look_while_running(job, tmp, outcome)
            outcome.returncode = job.wait()
        finally:
            if job.process.poll() is None:
                job.process.kill()
        wait_for(lambda: not run_processes(tag), 60)
        outcome.left_behind = run_processes(tag)
        for pid in outcome.left_behind:  # reported by the test; none may outlive it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return outcome

    def _look_while_running(self, job: Job, tmp: Path, outcome: Outcome) -> None:
        if job.process.poll() is not None:
            return
        outcome.expected_holder = job.holder()
        outcome.holder = lock_holder(outcome.run)
        job_yaml = (outcome.run / "job.yaml").read_bytes()
        outcome.second_launch = run_runner([*outcome.args, "dry_run=true"], env=self.env(tmp), timeout=300)
        outcome.job_yaml_untouched = (outcome.run / "job.yaml").read_bytes() == job_yaml

    def test_dry_run_writes_a_script_and_starts_nothing(self, tmp_path, tag):
        inputs, run = write_inputs(tmp_path / "in", self.inputs), tmp_path / "run"
        proc = run_runner([*self.args(tmp_path, inputs, run, *self.run_overrides), "dry_run=true"],
                          env={**self.env(tmp_path), **tagged_env(tag)}, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        script = run / self.script
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        assert not [p for p in (run / "out").rglob("*") if p.is_file()]
        assert not list((run / "stats").glob("*.json")) and not (run / "summary.json").exists()
        assert self.nothing_submitted(tmp_path, run)
        assert lock_holder(run) is None
        assert run_processes(tag) == {}

    @pytest.mark.engine
    def test_a_real_run_answers_every_line_once_and_writes_the_summary(self, real_run):
        assert real_run.returncode == 0, _tail(real_run.run)
        for name, lines in self.inputs.items():
            records = read_jsonl(real_run.run / "out" / f"{Path(name).stem}.out")
            assert [(r["line"], r["prompt"]) for r in records] == [(n, t) for n, t in enumerate(lines, 1) if t]
            assert all(r["status"] == "SUCCESS" and r["output_tokens"] > 0 for r in records)
        summary = json.loads((real_run.run / "summary.json").read_text())
        assert summary["prompts"] == summary["lines"] == sum(1 for lines in self.inputs.values() for t in lines if t)
        assert real_run.left_behind == {}

    @pytest.mark.engine
    def test_the_run_lock_is_held_while_the_job_runs_and_released_after(self, real_run):
        assert real_run.second_launch is not None, "the job ended before a worker was seen"
        held = real_run.holder
        scheduler, who = real_run.expected_holder
        assert held is not None and held["scheduler"] == scheduler
        assert (held["pid"] if scheduler == "local" else held["job_id"]) == who
        assert real_run.second_launch.returncode == 2, real_run.second_launch.stderr[-2000:]
        assert "Traceback" not in real_run.second_launch.stderr and real_run.job_yaml_untouched
        assert lock_holder(real_run.run) is None

    def test_the_walltime_deadline_reaches_the_workers(self, tmp_path):
        """A 2-minute walltime with a 2-minute margin (a shorter walltime is refused at launch): once a rank has
        started, less than the margin is left, so it starts no engine, answers nothing, and the job fails (a
        rerun resumes); the lock is released all the same."""
        if self.skip_reason():
            pytest.skip(self.skip_reason())
        inputs, run = write_inputs(tmp_path / "in", {"0.in": ["Say yes."]}), tmp_path / "run"
        args = self.args(tmp_path, inputs, run, "cluster.ranks_per_node=1", "launcher.walltime_min=2",
                         "mode.walltime_margin_s=120")
        job = self.start(args, tmp_path, self.env(tmp_path))
        assert job.wait() != 0
        stats = json.loads((run / "stats" / "rank0.json").read_text())
        assert (stats["answered"], stats["engine_start_s"]) == (0, 0.0)
        assert not (run / "out" / "0.out").exists()
        assert lock_holder(run) is None


def _tail(run: Path) -> str:
    logs = sorted((run / "logs").glob("*.log")) + sorted((run / "slurm").glob("*_log.*"))
    return "\n".join(f"{p}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs)

