"""One run at a time per run directory: a lock taken by the launch and held for the run's life.

The lock is a sequence of generations in <run>/lock/: `<N>.holder` (who holds it: host, pid, process start time,
boot, job id) and, once that holder is done, `<N>.released`. The newest generation decides. It is free when it
is released or its holder is dead: a local process gone (or its pid reused: the start time in /proc differs, or
the machine rebooted), a batch job the scheduler no longer lists. Taking it is creating generation N+1, and only
one process can create a name: each holder file is written aside and hard-linked into place (atomic, and
exclusive on NFS and Lustre too), so two launches that both saw generation N free cannot both win N+1, and a
launch that acted on an old view loses to the newer generation it finds when it checks again.

Who holds it: launcher=local, the `python -m runner` process for the whole run (its ranks and hosts never touch
the lock). launcher=pbs/slurm: the submit side, which hands it to the batch job once the scheduler gave the job
id, so a queued job holds the run too; in PBS the job's first step (one process per job) checks that the lock is
its own, or takes it, and the job's end releases it. At most one process per job reads or writes these files.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

from runner import procs
from runner.errors import ConfigError
from runner.run_dir import RunDir

log = logging.getLogger(__name__)

_SCHEDULER_VARS = (("pbs", "PBS_JOBID"), ("slurm", "SLURM_JOB_ID"))
_CONTENDED_TRIES = 20


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def holder(scheduler: str = "local", job_id: str = "") -> dict:
    """This process as a lock holder; a batch job (scheduler pbs/slurm with its job id) is alive as long as its
    scheduler lists it, a local holder as long as its process lives."""
    outer = next(((name, os.environ[var]) for name, var in _SCHEDULER_VARS if os.environ.get(var)), ("", ""))
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": procs.start_ticks(os.getpid()),
            "boot_id": _boot_id(), "scheduler": scheduler, "job_id": job_id or outer[1],
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}


def _scheduler_lists(record: dict) -> Optional[bool]:
    """Whether the batch job is still queued or running; None when its scheduler cannot be asked from here."""
    job = record["job_id"]
    argv = ["qstat", job] if record["scheduler"] == "pbs" else ["squeue", "-h", "-j", job, "-o", "%T"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return proc.returncode == 0 and bool(proc.stdout.strip())


def is_alive(record: dict) -> Tuple[bool, str]:
    """(alive, who): a holder that cannot be checked from here counts as alive."""
    where = f"on {record['host']} since {record['since']}"
    if record["scheduler"] in ("pbs", "slurm"):
        listed = _scheduler_lists(record)
        who = f"{record['scheduler'].upper()} job {record['job_id']} (submitted {where})"
        return listed is not False, who + (" (its scheduler cannot be asked from here)" if listed is None else "")
    who = f"pid {record['pid']} {where} ({record['command']})"
    if record["host"] != socket.gethostname():
        return True, who
    same_boot = record["boot_id"] == _boot_id()
    return same_boot and procs.start_ticks(record["pid"]) == record["start_ticks"], who


class RunLock:
    def __init__(self, run_root: Path):
        self.root = run_root
        self.dir = RunDir(run_root).lock
        self.generation = 0

    def _generations(self) -> list:
        names = os.listdir(self.dir) if self.dir.is_dir() else []
        return sorted({int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()})

    def _file(self, generation: int, kind: str) -> Path:
        return self.dir / f"{generation}.{kind}"

    def _newest(self) -> Tuple[int, Optional[dict]]:
        """The newest generation and its holder; (N, None) when it is released (0 when there is none)."""
        generations = self._generations()
        if not generations:
            return 0, None
        newest = generations[-1]
        if self._file(newest, "released").exists():
            return newest, None
        try:
            return newest, json.loads(self._file(newest, "holder").read_text())
        except FileNotFoundError:  # only a .released, or removed under us: look again
            return newest, {"retry": True}

    def _create(self, generation: int, record: dict) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        aside = self.dir / f"tmp-{socket.gethostname()}-{os.getpid()}"
        aside.write_text(json.dumps(record) + "\n")
        try:
            os.link(aside, self._file(generation, "holder"))
        except FileExistsError:
            return False
        finally:
            aside.unlink()
        if self._generations()[-1] != generation:  # acted on an old view: a newer generation exists
            self._file(generation, "holder").unlink()
            return False
        self.generation = generation
        return True

    def acquire(self, record: dict, force: bool = False) -> None:
        """Take the lock for `record`, or raise ConfigError naming the live holder and what to do."""
        for _ in range(_CONTENDED_TRIES):
            newest, current = self._newest()
            if not (current or {}).get("retry"):
                alive, who = is_alive(current) if current else (False, "")
                if alive and not force:
                    raise ConfigError(self._refusal(who))
                if self._create(newest + 1, record):
                    if current:
                        log.warning("took over the run's lock from %s (%s)", who, "forced" if alive else "gone")
                    self._forget_before(newest + 1)
                    return
            time.sleep(0.05)
        raise ConfigError(f"{self.root} is being taken by other launches right now; run the command again")

    def hand_over(self, record: dict) -> None:
        """Pass the lock, held by this process, to `record` (the batch job it submitted)."""
        if not self._create(self.generation + 1, record):
            raise ConfigError(f"{self.root}: the run's lock was taken while submitting; see {self.dir}")
        self._forget_before(self.generation)
        self.generation = 0  # the job's now: this process has nothing left to release

    def release_job(self, job_id: str) -> None:
        """Release the lock if batch job `job_id` holds it (the job ended)."""
        generation, current = self._newest()
        if current and current.get("job_id") == job_id and current.get("scheduler") in ("pbs", "slurm"):
            self.generation = generation
            self.release()

    def claim_for_job(self, scheduler: str, job_id: str, wait_s: float = 60.0) -> None:
        """In the batch job: keep the lock handed to this job, or take it (a script submitted by hand). The
        submit side may still be handing it over when the job starts: a live launch holding it is waited for
        `wait_s`; another batch job holding it is refused at once."""
        deadline = time.monotonic() + wait_s
        while True:
            _, current = self._newest()
            if current and current.get("job_id") == job_id and current.get("scheduler") == scheduler:
                return
            try:
                return self.acquire(holder(scheduler, job_id))
            except ConfigError:
                if (current or {}).get("scheduler") != "local" or time.monotonic() > deadline:
                    raise
            time.sleep(2)

    def release(self) -> None:
        """Mark this holder's generation done (nothing to do if a newer holder took over)."""
        if self.generation:
            try:
                os.close(os.open(self._file(self.generation, "released"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            self.generation = 0

    def _forget_before(self, generation: int) -> None:
        for old in self._generations():
            if old < generation:
                for kind in ("holder", "released"):
                    self._file(old, kind).unlink(missing_ok=True)

    def _refusal(self, who: str) -> str:
        return (f"{self.root} is in use by {who}; wait for it to end, start a separate run with run_name=NAME, "
                f"or, if you know it is gone, take the run over with force_lock=true")



def main(argv: list) -> int:
    """python -m runner.run_lock claim|release JOB_FILE: the first and last step of a PBS job (one process)."""
    import logging

    from runner.errors import RunnerError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    action, job_file = argv
    lock, job_id = RunLock(Path(job_file).resolve().parent), os.environ.get("PBS_JOBID", "")
    try:
        lock.claim_for_job("pbs", job_id) if action == "claim" else lock.release_job(job_id)
    except RunnerError as e:
        logging.getLogger("runner.run_lock").error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
