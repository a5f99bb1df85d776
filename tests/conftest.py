"""Helpers shared by the tests: run `python -m runner` for real, make input folders."""

import json
import os
import subprocess
import sys
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
