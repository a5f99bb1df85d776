"""A shared-filesystem queue of input files: a host claims the next unclaimed, unfinished file when it is free.

A claim is a file created with O_EXCL under claims/<attempt>/, so two hosts never take the same input in one
attempt; a new attempt (a rerun, a new job id) starts with no claims and skips the files already finished.

The holder of a claim touches it while it works (`heartbeats`). When a host has nothing left to claim, it waits
for the other hosts' files to finish; a claim untouched for `stale_after_s` (its host died) is taken over by
creating the next generation of that claim (`<file>.takeover<k>`), again with O_EXCL, so only one host wins it.

Metadata cost, for 2048 hosts on one Lustre (every call here is a request to its metadata server; the totals are
measured by benchmarks/queue_scale.py):
- each host starts at its own share of the free files (host index x free files / hosts) and claims them one create
  each; finished files come from one listing of out/, not one stat per file;
- when its share is used up, or it runs into another host's claim (EEXIST), a host lists the claims once and goes on
  from the middle of the longest run of unclaimed files, so two hosts do not leapfrog each other file by file;
- a waiting host lists out/ once per poll, polls backed off from poll_s to max_poll_s; it stats a claim only when
  the claim may have gone stale (stale_after_s after its last touch seen), and only WATCHERS waiting hosts check a
  given claim in a given stale_after_s window;
- finished() drops a file from the heartbeats, so a beat touches the one or two claims a host holds.
"""

import os
import re
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from omegaconf import DictConfig

from runner.run_dir import FILE_OUTPUT_SUFFIX, file_output_name
from runner.walltime import near_end

_ATTEMPT_VARS = ("RUNNER_ATTEMPT", "PBS_JOBID", "SLURM_JOB_ID")
_TAKEOVER = ".takeover"
_GENERATION = re.compile(r"^(.*)\.takeover(\d+)$")
WATCHERS = 3  # waiting hosts that check one claim for staleness in one stale_after_s window


def list_inputs(cfg: DictConfig) -> List[Path]:
    """The input files of a server_per_node job (input.path: a file, a folder or a glob), sorted."""
    from runner.readers import reader_of

    return reader_of(cfg).files()


# how often Slurm started the job again under its job id (requeued after a node failure or preemption)
_RESTARTS_VAR = "SLURM_RESTART_COUNT"


def attempt_id() -> str:
    """This start of the job: the local launch's id or the job id, and the restart of a requeued Slurm job (which
    keeps its id: its first start's claims and Ray addresses are not this start's)."""
    restarts = os.environ.get(_RESTARTS_VAR, "0")
    for var in _ATTEMPT_VARS:
        if os.environ.get(var):
            job = os.environ[var].replace("/", "_")
            return job if var != "SLURM_JOB_ID" or restarts in ("", "0") else f"{job}-r{restarts}"
    return "manual"


def _listing(folder: Path) -> List[str]:
    """The names in a folder: one metadata request (a readdir), however many names it holds."""
    with os.scandir(folder) as entries:
        return [e.name for e in entries]


def _create(path: Path) -> int:
    """Create the file exclusively; the first host of an attempt also makes its folder (one host, not all)."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        try:
            os.mkdir(path.parent)
        except FileExistsError:  # another host made it meanwhile
            pass
        except FileNotFoundError:  # claims/ itself is new
            os.makedirs(path.parent, exist_ok=True)
        return os.open(path, flags)


class FileQueue:
    def __init__(self, files: List[Path], out_dir: Path, claims_root: Path, attempt: Optional[str] = None,
                 stale_after_s: float = 0.0, poll_s: float = 5.0, host: int = 0, hosts: int = 1,
                 max_poll_s: float = 60.0):
        """stale_after_s=0: never take over a claim (a file left by a dead host waits for the next attempt).
        host, hosts: this host's index in the job and the number of hosts (where its scan starts)."""
        self.files = files
        self.out_dir = out_dir
        self.claims = claims_root / (attempt or attempt_id())
        self.stale_after_s = stale_after_s
        self.poll_s = poll_s
        self.max_poll_s = max(poll_s, max_poll_s)
        self.host, self.hosts = host, max(hosts, 1)
        self._index = {f.name: i for i, f in enumerate(files)}
        self._finished: set = set()  # names with an output (as of the last listing of out/)
        self._unfinished = dict.fromkeys(self._index)  # the others, in list order
        self._generation: Dict[str, int] = {}  # claimed names -> latest claim generation seen
        self._due: Dict[str, float] = {}  # claimed names -> when (epoch s) their claim may be stale
        self._held: dict = {}  # names -> this host's claim path, until finished()
        self._next: Optional[int] = None  # this host's stretch of files, claimed one by one: _next to _end
        self._end = 0
        self._listed_at: Optional[float] = None  # when this host last listed the claims (epoch s)
        self._stop = threading.Event()

    # what this host knows: one listing of out/ or of the claims folder at a time

    def _list_finished(self) -> None:
        suffix = FILE_OUTPUT_SUFFIX
        try:
            names = [n[:-len(suffix)] for n in _listing(self.out_dir) if n.endswith(suffix)]
        except FileNotFoundError:  # nothing written yet
            return
        for name in names:
            self._mark_finished(name)

    def _mark_finished(self, name: str) -> None:
        if name in self._unfinished:
            self._finished.add(name)
            del self._unfinished[name]

    def _list_claims(self) -> None:
        listed_at = time.time()
        try:
            names = _listing(self.claims)
        except FileNotFoundError:  # no host has claimed anything yet
            return
        self._listed_at = listed_at
        for name in names:
            match = _GENERATION.match(name)
            if name in self._index:
                self._saw_claim(name, 0)
            elif match and match.group(1) in self._index:
                self._saw_claim(match.group(1), int(match.group(2)))

    def _saw_claim(self, name: str, generation: int, touched: Optional[float] = None) -> None:
        """A claim first seen in a listing counts as touched now: a stat of every claim would cost a request per
        file and host. Its age is read when this host runs into it, and when it may have gone stale."""
        known = self._generation.get(name, -1)
        if generation > known or (generation == known and touched is not None):
            self._generation[name] = generation
            self._due[name] = (time.time() if touched is None else touched) + self.stale_after_s

    def _free(self, i: int) -> bool:
        name = self.files[i].name
        return name not in self._finished and name not in self._generation

    # claiming

    def _claim_path(self, name: str, generation: int) -> Path:
        suffix = f"{_TAKEOVER}{generation}" if generation else ""
        return self.claims / f"{name}{suffix}"

    def _claim(self, input_file: Path, generation: int = 0) -> bool:
        path = self._claim_path(input_file.name, generation)
        try:
            fd = _create(path)
        except FileExistsError:
            self._collided(input_file.name, generation)
            return False
        try:
            os.write(fd, f"{socket.gethostname()} {os.getpid()} host{self.host}\n".encode())
        finally:
            os.close(fd)
        self._saw_claim(input_file.name, generation)
        self._held[input_file.name] = path
        return True

    def _collided(self, name: str, generation: int) -> None:
        """Another host holds this claim: note when it may go stale, and go elsewhere. A claim missing from this
        host's last listing of the claims is younger than that listing; before any listing, it may be an old
        claim of a dead host (one stat)."""
        touched = self._listed_at
        if self.stale_after_s and touched is None:
            try:
                touched = os.stat(self._claim_path(name, generation)).st_mtime
            except FileNotFoundError:
                pass
        self._saw_claim(name, generation, touched)
        self._next = None

    def _start_at(self) -> None:
        """This host's first stretch: its share of the files still free, so hosts start apart and each claims
        its share without looking at the others' claims."""
        free = [i for i in range(len(self.files)) if self._free(i)]
        if not free:
            self._next = None
            return
        self._next = free[self.host * len(free) // self.hosts]
        after = (self.host + 1) * len(free) // self.hosts
        self._end = free[after] if after < len(free) else len(self.files)

    def _jump(self) -> None:
        """The next stretch: from the middle of the longest run of free files (unfinished files, in list order)
        to its end, so the host working from the run's start meets this one only when the run is used up."""
        open_files = [i for i in range(len(self.files)) if self.files[i].name not in self._finished]
        best, start = (0, 0), 0
        for k, i in enumerate(open_files):
            if not self._free(i):
                start = k + 1
            elif k + 1 - start > best[1]:
                best = (start, k + 1 - start)
        if not best[1]:
            self._next = None
            return
        self._next = open_files[best[0] + best[1] // 2]
        self._end = open_files[best[0] + best[1] - 1] + 1

    def _candidate(self) -> Optional[int]:
        """The next free file of this host's stretch; once that is used up (or ran into another host's claim),
        the next stretch, after a fresh listing of the claims: a host does not try the other hosts' claims one
        by one."""
        while self._next is not None and self._next < self._end and not self._free(self._next):
            self._next += 1
        if self._next is not None and self._next < self._end:
            return self._next
        self._list_claims()
        self._jump()
        return self._next

    def _claim_next(self) -> Optional[Path]:
        while True:
            i = self._candidate()
            if i is None:
                return None
            if self._claim(self.files[i]):
                self._next = i + 1
                return self.files[i]

    # waiting for the other hosts, and taking over a dead host's file

    def _left(self) -> List[str]:
        return [name for name in self._unfinished if name not in self._held]

    def _take_over(self, name: str) -> Optional[Path]:
        """Claim the file if its latest claim is older than stale_after_s (else note when to look again)."""
        generation = self._generation.get(name, 0)
        try:
            touched = os.stat(self._claim_path(name, generation)).st_mtime
        except FileNotFoundError:
            touched = time.time()
        if time.time() - touched < self.stale_after_s:
            self._saw_claim(name, generation, touched)
            return None
        input_file = self.files[self._index[name]]
        if os.path.exists(self.out_dir / file_output_name(input_file.name)):  # its host died after writing it
            self._mark_finished(name)
            return None
        return input_file if self._claim(input_file, generation + 1) else None

    def watches(self, name: str, now: float) -> bool:
        """Whether this host checks the claim for staleness in this stale_after_s window: WATCHERS hosts do, a
        different few each window (so a dead watcher is replaced), not every waiting host."""
        window = int(now // self.stale_after_s)
        return (self._index[name] + window * WATCHERS - self.host) % self.hosts < WATCHERS

    def _due_take_over(self, left: List[str]) -> Optional[Path]:
        now = time.time()
        for name in left:
            if name not in self._generation or self._due[name] > now:
                continue
            if not self.watches(name, now):  # look again in the next window
                self._due[name] = (now // self.stale_after_s + 1) * self.stale_after_s
                continue
            taken = self._take_over(name)
            if taken is not None:
                return taken
        return None

    def _wait_s(self, left: List[str], delay: float) -> float:
        """Until the next poll, or until a claim may have gone stale if that comes first."""
        due = min((self._due[n] for n in left if n in self._due), default=time.time() + delay)
        return max(0.0, min(delay, due - time.time()))

    def _wait_for_others(self) -> Optional[Path]:
        """Wait until every file is finished (None) or a dead host's file is taken over (the file). Each poll
        is one listing of out/; a claim is stat-ed only when it may have gone stale."""
        delay, polled = self.poll_s, time.monotonic()
        while True:
            left = self._left()
            if not left:
                return None
            free = any(name not in self._generation for name in left)  # as far as this host knows
            taken = self._due_take_over(left) or (self._claim_next() if free else None)
            if taken is not None:
                return taken
            wait_s = self._wait_s(left, delay)
            if near_end(wait_s) or self._stop.wait(wait_s):
                return None
            if time.monotonic() - polled >= delay * 0.999:
                self._list_finished()
                delay, polled = min(delay * 2, self.max_poll_s), time.monotonic()

    def take(self) -> Iterator[Path]:
        """Yield files this host claimed, one at a time, until every file is finished or held by this host (or,
        without takeover, until none is left unclaimed). It may be asked for the next file while the last one is
        still being answered."""
        self._list_finished()
        self._start_at()
        while True:
            input_file = self._claim_next()
            if input_file is None and self.stale_after_s:
                input_file = self._wait_for_others()
            if input_file is None:
                return
            yield input_file

    def finished(self, input_file: Path) -> None:
        """This host wrote the file's output: stop touching its claim."""
        self._mark_finished(input_file.name)
        self._held.pop(input_file.name, None)

    def stop_waiting(self) -> None:
        """End a take() that waits for other hosts' files (from another thread: the host is stopping)."""
        self._stop.set()

    def beat(self) -> None:
        """Touch this host's claims once (the heartbeat)."""
        for path in list(self._held.values()):
            try:
                os.utime(path)
            except FileNotFoundError:
                pass

    @contextmanager
    def heartbeats(self):
        """While in this block, a thread touches this host's claims every stale_after_s / 5 seconds (also while
        its server starts), so no other host takes them over."""
        if not self.stale_after_s:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.stale_after_s / 5):
                self.beat()

        thread = threading.Thread(target=beat, name="claim-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def prune_attempts(claims_root: Path, keep: str, stale_after_s: float) -> List[str]:
    """Remove the claim folders of earlier attempts in which no claim was touched for stale_after_s (no live host
    works in them), so claims/ does not grow by a folder per rerun. Called by one host per job."""
    removed = []
    if not stale_after_s or not claims_root.is_dir():
        return removed
    for folder in os.scandir(claims_root):
        if folder.name != keep and folder.is_dir() and _untouched_for(Path(folder.path), stale_after_s):
            shutil.rmtree(folder.path, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _untouched_for(folder: Path, seconds: float) -> bool:
    newest = max((e.stat().st_mtime for e in os.scandir(folder)), default=0.0)
    return time.time() - max(newest, folder.stat().st_mtime) >= seconds
