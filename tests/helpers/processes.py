"""A test run's processes, found by the tag in their environment (never by a global pattern), and /dev/shm."""

import os
import time
from pathlib import Path


def tagged_env(tag: str) -> dict:
    """An environment variable every process of one test's run inherits (vllm's engine core too)."""
    return {"RUNNER_TEST_RUN": tag}


# tag -> ids of the sessions led by a process of the run (the server guards), kept once seen
_SESSIONS: dict = {}


def run_processes(tag: str) -> dict:
    """pid -> argv of every live process of one test's run: those carrying its tag in their environment, and the
    members of sessions a tagged process leads. A process that rewrites its title (vLLM's engine core) loses its
    environment in /proc, but keeps its session, also after the leader died. Orphans re-parented to init are
    found as well; no other user's or helper's process can match."""
    sessions, tagged, others = _SESSIONS.setdefault(tag, set()), {}, {}
    needle = f"RUNNER_TEST_RUN={tag}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            state, sid = stat[stat.rfind(")") + 2:].split()[0], int(stat[stat.rfind(")") + 2:].split()[3])
            argv = Path(entry.path, "cmdline").read_bytes().decode(errors="replace").split("\0")
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if state == "Z":
            continue
        pid = int(entry.name)
        if needle in environ:
            tagged[pid] = argv
            if sid == pid:
                sessions.add(sid)
        else:
            others[pid] = (sid, argv)
    return {**tagged, **{pid: argv for pid, (sid, argv) in others.items() if sid in sessions}}


def shm_files() -> set:
    """multiprocessing's semaphores and shared memory segments in /dev/shm (a killed run may leak them)."""
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(("sem.mp-", "psm_"))}


def wait_for(condition, seconds: float, step: float = 0.2):
    """condition() once it is truthy, or its last value after `seconds`."""
    deadline = time.time() + seconds
    while not (value := condition()) and time.time() < deadline:
        time.sleep(step)
    return value



def run_shm_files(tag: str) -> set:
    """The semaphores and shared memory segments in /dev/shm that the processes of one test's run map now (a
    leak check over these alone holds while other runs make and remove their own beside it). Matched by inode:
    glibc maps a semaphore under a temporary name, then links it to its own."""
    inodes = set()
    for pid in run_processes(tag):
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for fields in (line.split(maxsplit=5) for line in maps.splitlines()):
            if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                inodes.add(int(fields[4]))
    names = set()
    for name in shm_files():
        try:
            if os.stat(f"/dev/shm/{name}").st_ino in inodes:
                names.add(name)
        except OSError:
            continue
    return names
