"""A shared-filesystem queue of input files: a host claims the next unclaimed, unfinished file when it is free.

A claim is a file created with O_EXCL under claims/<attempt>/, so two hosts never take the same input in one
attempt; a new attempt (a rerun, a new job id) starts with no claims and skips the files already finished.
"""

import os
import socket
from pathlib import Path
from typing import Iterator, List, Optional

from omegaconf import DictConfig

_ATTEMPT_VARS = ("RUNNER_ATTEMPT", "PBS_JOBID", "SLURM_JOB_ID")


def list_inputs(cfg: DictConfig) -> List[Path]:
    """The input files of a server_per_node job, sorted by name."""
    return sorted(p for p in Path(cfg.mode.input_dir).glob(cfg.mode.input_glob) if p.is_file())


def output_path(out_dir: Path, input_file: Path) -> Path:
    return out_dir / f"{input_file.name}.jsonl"


def attempt_id() -> str:
    for var in _ATTEMPT_VARS:
        if os.environ.get(var):
            return os.environ[var].replace("/", "_")
    return "manual"


class FileQueue:
    def __init__(self, files: List[Path], out_dir: Path, claims_root: Path, attempt: Optional[str] = None):
        self.files = files
        self.out_dir = out_dir
        self.claims = claims_root / (attempt or attempt_id())
        self.claims.mkdir(parents=True, exist_ok=True)

    def _claim(self, input_file: Path) -> bool:
        try:
            fd = os.open(self.claims / input_file.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        os.close(fd)
        return True

    def take(self) -> Iterator[Path]:
        """Yield files this host claimed, one at a time, until none is left."""
        for input_file in self.files:
            if not output_path(self.out_dir, input_file).exists() and self._claim(input_file):
                yield input_file
