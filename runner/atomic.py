"""Files written whole or not at all: a reader (another host, a rerun, the user) sees the old content or the new
one under the file's name, never a torn or half-written file, even when the writer is killed mid-write.

A temp file beside the target is written, flushed to disk and renamed over it (rename is atomic within a
folder on POSIX filesystems, Lustre included). Folder renames (staged models, the SmolLM2 build) are not this.
"""

import json
import os
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def temp_path(path: Path) -> Path:
    """A hidden temp name beside `path`, its own to this host, process and thread: writers on two hosts of a shared
    filesystem (equal pids are common across nodes) or two threads of one process never share a temp file. A temp
    file that a killed writer left is hidden from `ls` and matches no glob of the runner's (stats/*.json)."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_native_id()}.tmp")


def remove_temps(folder: Path) -> int:
    """Remove the temp files killed writers left in `folder` (one listing); only for a caller that knows no
    writer of the folder is alive (the launch holding the run's lock, before its ranks start). A live writer
    whose temp file is removed fails at its rename, its target untouched. Returns how many were removed."""
    try:
        with os.scandir(folder) as entries:
            stale = [entry.path for entry in entries if entry.name.startswith(".") and entry.name.endswith(".tmp")]
    except FileNotFoundError:
        return 0
    for path in stale:
        Path(path).unlink(missing_ok=True)
    return len(stale)


@contextmanager
def replacing(path: Path) -> Iterator[IO[str]]:
    """A text file to write `path`'s new content into; on a clean exit it replaces `path`, on an error it is
    removed and `path` keeps its old content (or stays absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            # the data reaches the disk before the rename does: after a node crash a journaling filesystem
            # (ext4, XFS, Lustre's servers) may have kept the rename but not the data, leaving an empty file
            # under the final name; for a finished output whose ledger is then removed, that loses the answers.
            # One fsync per file written (outputs, sidecars, stats, caches): none is on a per-line path.
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with replacing(path) as f:
        f.write(text)


def write_json(path: Path, value, indent=None) -> None:
    write_text(path, json.dumps(value, indent=indent))
