"""Helpers shared by the tests: run `python -m runner` for real, make input folders."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_runner(args: List[str], timeout: float = 900, env: dict | None = None, multirun: bool = False):
    """`python -m runner ARGS` in a subprocess from the project root; returns the CompletedProcess."""
    argv = [sys.executable, "-m", "runner", *(["-m"] if multirun else []), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def write_inputs(folder: Path, files: dict) -> Path:
    """files: name -> list of lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text("".join(f"{line}\n" for line in lines))
    return folder


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tmp_path / "run"


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


class _ForeignHandler(http.server.BaseHTTPRequestHandler):
    """Another user's service on a port the runner might pick: /health says 200 (as any vLLM would), everything
    else 404. The server's `seen` lists the paths it was asked for."""

    def do_GET(self):
        self.server.seen.append(self.path)
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET

    def log_message(self, *args):
        pass


def serve_foreign() -> http.server.ThreadingHTTPServer:
    """A foreign HTTP server on a free loopback port, in a daemon thread; `.shutdown()` it when done."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForeignHandler)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
