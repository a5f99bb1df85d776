"""Helpers shared by the tests: run `python -m runner` for real, make input folders."""

import json
import os
import subprocess
import sys
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


def run_processes(tag: str) -> dict:
    """pid -> argv of every live process carrying the run's tag in its environment: the run's whole process
    tree, orphans re-parented to init included; no other user's or helper's process can match."""
    found, needle = {}, f"RUNNER_TEST_RUN={tag}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if needle in Path(entry.path, "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = Path(entry.path, "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
    return found


def shm_files() -> set:
    """multiprocessing's semaphores and shared memory segments in /dev/shm (a killed run may leak them)."""
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(("sem.mp-", "psm_"))}


def wait_for(condition, seconds: float, step: float = 0.2):
    """condition() once it is truthy, or its last value after `seconds`."""
    deadline = time.time() + seconds
    while not (value := condition()) and time.time() < deadline:
        time.sleep(step)
    return value
