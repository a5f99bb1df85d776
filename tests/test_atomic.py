"""runner.atomic: a file written through it is read whole (old or new content), also when its writer is SIGKILLed
in the middle of writing, and when threads write the same file at once."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner import atomic

# a writer that rewrites the file as fast as it can, each version 2 MB (many write calls) and self-checking
WRITER = """
import hashlib, json, sys
from runner import atomic
path, n = sys.argv[1], 0
while True:
    body = str(n) * (2_000_000 // len(str(n)))
    atomic.write_json(path, {"n": n, "sha": hashlib.sha256(body.encode()).hexdigest(), "body": body})
    n += 1
"""


def _whole(path: Path) -> int:
    """The version number of the file's content; fails on a torn or mixed file."""
    record = json.loads(path.read_text())
    assert hashlib.sha256(record["body"].encode()).hexdigest() == record["sha"]
    return record["n"]


def test_sigkilled_writer_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "stats.json"
    atomic.write_json(path, {"n": -1, "sha": hashlib.sha256(b"").hexdigest(), "body": ""})
    seen = set()
    for round_ in range(12):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=Path(__file__).parent.parent)
        deadline = time.monotonic() + 0.3 + 0.05 * round_  # killed at a different point of a write each round
        while time.monotonic() < deadline:
            seen.add(_whole(path))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        seen.add(_whole(path))
    assert len(seen) > 3  # the writers did replace the file while it was read
    assert list(tmp_path.glob("*.json")) == [path]  # a killed writer's temp file is no stats file


def test_failed_write_keeps_the_old_content_and_no_temp_file(tmp_path):
    path = tmp_path / "out.jsonl"
    atomic.write_text(path, "old\n")
    with pytest.raises(ZeroDivisionError):
        with atomic.replacing(path) as f:
            f.write("half of the new")
            1 / 0
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_threads_writing_one_file_each_leave_a_whole_version(tmp_path):
    """Each thread has its own temp file: a shared one would be renamed away half-written by another thread."""
    path, failures = tmp_path / "cache.json", []

    def write(tag: str) -> None:
        try:
            for _ in range(30):
                atomic.write_json(path, {"tag": tag, "body": tag * 200_000})
        except OSError as e:  # a temp file renamed away under this thread
            failures.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record = json.loads(path.read_text())
    assert not failures
    assert record["body"] == record["tag"] * 200_000
    assert os.listdir(tmp_path) == ["cache.json"]


def test_temp_names_differ_per_thread_and_hide_beside_the_target(tmp_path):
    names = []
    worker = threading.Thread(target=lambda: names.append(atomic.temp_path(tmp_path / "a.json")))
    worker.start()
    worker.join()
    mine = atomic.temp_path(tmp_path / "a.json")
    assert mine != names[0] and mine.parent == tmp_path and mine.name.startswith(".a.json.")
