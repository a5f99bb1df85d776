"""One run at a time per run directory: the run lock with real processes (no engine is started)."""

import json
import os
import socket
import stat
import subprocess
import sys
import time

from helpers.cli import ROOT, run_runner
from helpers.inputs import write_inputs
from runner.run_lock import RunLock, holder

HOLD = "import sys, time; from pathlib import Path; from runner.run_lock import RunLock, holder; " \
       "RunLock(Path(sys.argv[1])).acquire(holder()); print('held', flush=True); time.sleep(600)"


def _holding_process(run):
    """A real process that takes the run's lock and keeps it until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def _args(tmp_path, run, *extra):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["Say yes."], "1.in": ["Say no."]})
    return [f"input.path={inputs}", f"hydra.run.dir={run}", "dry_run=true", *extra]


def test_a_second_launch_refuses_in_one_line_naming_the_holder_and_the_way_out(tmp_path):
    run = tmp_path / "run"
    holding = _holding_process(run)
    try:
        proc = run_runner(_args(tmp_path, run))
    finally:
        holding.kill()
        holding.wait()
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert f"in use by pid {holding.pid} on {socket.gethostname()}" in errors[0]
    assert "run_name=" in errors[0] and "force_lock=true" in errors[0]
    assert not (run / "job.yaml").exists() and not (run / "job.sh").exists()
    # the holder is dead now (SIGKILL, no clean-up): the same command takes the run over
    proc = run_runner(_args(tmp_path, run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "job.sh").exists()
    generation, current = RunLock(run)._newest()
    assert current is None and sorted(os.listdir(run / "lock")) == [f"{generation}.holder", f"{generation}.released"]


def _write_holder(run, **changes):
    lock = RunLock(run)
    assert lock._create(lock._newest()[0] + 1, {**holder(), **changes})
    return lock


def test_a_reused_pid_is_a_dead_holder_and_another_host_is_refused_unless_forced(tmp_path):
    run = tmp_path / "run"
    sleeper = subprocess.Popen(["sleep", "600"])
    try:  # a live pid, but not the process that took the lock (another start time): stale
        _write_holder(run, pid=sleeper.pid, start_ticks=1)
        assert run_runner(_args(tmp_path, run)).returncode == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    _write_holder(run, host="login07.other")  # cannot be checked from here: counts as alive
    refused = run_runner(_args(tmp_path, run))
    assert refused.returncode == 2 and "in use by pid" in refused.stderr and "on login07.other" in refused.stderr
    forced = run_runner(_args(tmp_path, run, "force_lock=true"))
    assert forced.returncode == 0, forced.stderr[-3000:]


RACE = """
import sys, time
from pathlib import Path
from runner.errors import ConfigError
from runner.run_lock import RunLock, holder
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
try:
    RunLock(Path(sys.argv[1])).acquire(holder())
    print("won", flush=True)
    time.sleep(5)
except ConfigError:
    print("refused", flush=True)
"""


def test_of_many_launches_racing_for_a_free_or_a_stale_lock_exactly_one_wins(tmp_path):
    for case in ("free", "stale"):
        run, go = tmp_path / case, tmp_path / f"go-{case}"
        if case == "stale":
            _write_holder(run, pid=2 ** 22 + 1, start_ticks=1)  # a pid that cannot exist
        racers = [subprocess.Popen([sys.executable, "-c", RACE, str(run), str(go)], cwd=ROOT, stdout=subprocess.PIPE,
                                   text=True) for _ in range(8)]
        time.sleep(1.5)  # all of them are polling
        go.touch()
        answers = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
        assert answers == ["refused"] * 7 + ["won"], (case, answers)


def _fake_bin(folder, name, body):
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_a_queued_pbs_job_holds_the_run_until_qstat_no_longer_lists_it(tmp_path):
    """The submit side hands the lock to the job; a second submission asks qstat (faked) about that job."""
    bin_dir, run = tmp_path / "bin", tmp_path / "run"
    qsub = _fake_bin(bin_dir, "qsub", "echo 4242.pbs01")
    _fake_bin(bin_dir, "qstat", f'echo "$@" >> {tmp_path}/qstat.args; [ -e {tmp_path}/job-ended ] && exit 35; '
                                'echo "4242.pbs01 runner-x user 0 Q debug"')
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = ["launcher=pbs", "launcher.queue=debug", "launcher.account=proj", f"launcher.qsub={qsub}",
            *_args(tmp_path, run)[:2]]
    assert run_runner(args, env=env).returncode == 0
    held = json.loads(next((run / "lock").glob("*.holder")).read_text())
    assert (held["scheduler"], held["job_id"]) == ("pbs", "4242.pbs01")
    refused = run_runner(args, env=env)
    assert refused.returncode == 2 and "in use by PBS job 4242.pbs01" in refused.stderr
    assert (tmp_path / "qstat.args").read_text().split() == ["4242.pbs01"]
    (tmp_path / "job-ended").touch()
    assert run_runner(args, env=env).returncode == 0


def test_the_pbs_job_takes_a_free_lock_and_refuses_when_another_job_holds_it(tmp_path):
    run = tmp_path / "run"
    assert run_runner(["launcher=pbs", "launcher.queue=debug", "launcher.account=proj",
                       *_args(tmp_path, run)]).returncode == 0
    claim = [sys.executable, "-m", "runner.run_lock", "claim", str(run / "job.yaml")]
    mine = {**os.environ, "PBS_JOBID": "7.pbs01", "PATH": "/usr/bin:/bin"}  # no qstat: 7 cannot be asked about
    assert subprocess.run(claim, cwd=ROOT, env=mine).returncode == 0
    assert subprocess.run(claim, cwd=ROOT, env=mine).returncode == 0  # its own lock: kept
    other = subprocess.run([*claim[:-1], str(run / "job.yaml")], cwd=ROOT, capture_output=True, text=True,
                           env={**mine, "PBS_JOBID": "8.pbs01"}, timeout=120)
    assert other.returncode == 2 and "in use by PBS job 7.pbs01" in other.stderr
    subprocess.run([sys.executable, "-m", "runner.run_lock", "release", str(run / "job.yaml")], cwd=ROOT, env=mine,
                   check=True)
    assert RunLock(run)._newest()[1] is None
