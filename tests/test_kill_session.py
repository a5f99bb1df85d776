"""runner.procs.kill_session for real: a killed session leaves no multiprocessing semaphore in /dev/shm, even
when its resource tracker (which would unlink it) is killed with it."""

import glob
import os
import subprocess
import sys

from helpers.processes import wait_for
from runner import procs

HOLDER = """
import multiprocessing as mp, time
ctx = mp.get_context("spawn")  # spawn semaphores have a name in /dev/shm, unlinked by the resource tracker
lock = ctx.Semaphore(1)
print(lock._semlock.name, flush=True)
time.sleep(600)
"""


def test_a_killed_session_leaves_no_semaphore_even_when_its_tracker_dies_at_once():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], start_new_session=True, stdout=subprocess.PIPE, text=True)
    name = holder.stdout.readline().strip()  # "/mp-xxxxxxxx"
    path = f"/dev/shm/sem.{name.lstrip('/')}"
    try:
        assert os.path.exists(path)
        sid = os.getsid(holder.pid)
        # the tracker is forked, then execs: its command line names it only once the exec is done
        assert wait_for(lambda: any(b"resource_tracker" in _cmdline(p) for p in procs.session_members(sid)), 10)
        procs.kill_session(sid, tracker_grace_s=0.0)  # no time for the tracker: it is killed with the rest
        holder.wait(timeout=10)
        assert not procs.session_members(sid)
        assert not os.path.exists(path), glob.glob("/dev/shm/sem.mp-*")
    finally:
        holder.kill()


def _cmdline(pid: int) -> bytes:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""
