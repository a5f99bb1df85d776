"""A shared-filesystem queue of input files: a host claims the next unclaimed, unfinished file when it is free.

A claim is a file created with O_EXCL under claims/<attempt>/, so two hosts never take the same input in one
attempt; a new attempt (a rerun, a new job id) starts with no claims and skips the files already finished.

The holder of a claim touches it while it works (`heartbeats`). When a host has nothing left to claim, it waits
for the other hosts' files to finish; a claim untouched for `stale_after_s` (its host died) is taken over by
creating the next generation of that claim (`<file>.takeover<k>`), again with O_EXCL, so only one host wins it.
"""

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from omegaconf import DictConfig

from runner.walltime import near_end

_ATTEMPT_VARS = ("RUNNER_ATTEMPT", "PBS_JOBID", "SLURM_JOB_ID")
_TAKEOVER = ".takeover"


def list_inputs(cfg: DictConfig) -> List[Path]:
    """The input files of a server_per_node job, sorted by name."""
    return sorted(p for p in Path(cfg.mode.input_dir).glob(cfg.mode.input_glob) if p.is_file())


def output_path(out_dir: Path, input_file: Path) -> Path:
    return out_dir / f"{input_file.name}.jsonl"


def ledger_path(out_dir: Path, input_file: Path) -> Path:
    """The file's resume ledger (answers so far), until output_path is written."""
    return out_dir / f"{input_file.name}.log.jsonl"


def attempt_id() -> str:
    for var in _ATTEMPT_VARS:
        if os.environ.get(var):
            return os.environ[var].replace("/", "_")
    return "manual"


class FileQueue:
    def __init__(self, files: List[Path], out_dir: Path, claims_root: Path, attempt: Optional[str] = None,
                 stale_after_s: float = 0.0, poll_s: float = 5.0):
        """stale_after_s=0: never take over a claim (a file left by a dead host waits for the next attempt)."""
        self.files = files
        self.out_dir = out_dir
        self.claims = claims_root / (attempt or attempt_id())
        self.claims.mkdir(parents=True, exist_ok=True)
        self.stale_after_s = stale_after_s
        self.poll_s = poll_s
        self._held: dict = {}
        self._stop = threading.Event()

    def _done(self, input_file: Path) -> bool:
        return output_path(self.out_dir, input_file).exists()

    def _claim_path(self, input_file: Path, generation: int) -> Path:
        suffix = f"{_TAKEOVER}{generation}" if generation else ""
        return self.claims / f"{input_file.name}{suffix}"

    def _latest_generation(self, input_file: Path) -> int:
        prefix = f"{input_file.name}{_TAKEOVER}"
        found = [int(p.name[len(prefix):]) for p in self.claims.glob(f"{input_file.name}{_TAKEOVER}*")
                 if p.name[len(prefix):].isdigit()]
        return max(found, default=0)

    def _claim(self, input_file: Path, generation: int = 0) -> bool:
        path = self._claim_path(input_file, generation)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        os.close(fd)
        self._held[input_file.name] = path
        return True

    def _take_over(self, input_file: Path) -> bool:
        """Claim the file if its latest claim is older than stale_after_s."""
        generation = self._latest_generation(input_file)
        try:
            age = time.time() - self._claim_path(input_file, generation).stat().st_mtime
        except FileNotFoundError:
            return False
        return age >= self.stale_after_s and self._claim(input_file, generation + 1)

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
                for path in list(self._held.values()):
                    try:
                        os.utime(path)
                    except FileNotFoundError:
                        pass

        thread = threading.Thread(target=beat, name="claim-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def take(self) -> Iterator[Path]:
        """Yield files this host claimed, one at a time, until every file is finished or held by this host (or,
        without takeover, until none is left unclaimed). It may be asked for the next file while the last one is
        still being answered."""
        while True:
            for input_file in self.files:
                if not self._done(input_file) and self._claim(input_file):
                    yield input_file
            left = [f for f in self.files if not self._done(f) and f.name not in self._held]  # ours: in progress
            if not left or not self.stale_after_s:
                return
            taken = next((f for f in left if self._take_over(f)), None)  # one at a time, as the first pass
            if taken is not None:
                yield taken
                continue
            if near_end(self.poll_s):
                return
            if self._stop.wait(self.poll_s):
                return

    def stop_waiting(self) -> None:
        """End a take() that waits for other hosts' files (from another thread: the host is stopping)."""
        self._stop.set()
