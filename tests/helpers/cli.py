"""`python -m runner` for real, in a subprocess from the project root."""

import os
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]


def runner_argv(args: List[str], multirun: bool = False) -> List[str]:
    return [sys.executable, "-m", "runner", *(["-m"] if multirun else []), *args]


def run_runner(args: List[str], timeout: float = 900, env: dict | None = None, multirun: bool = False):
    """`python -m runner ARGS` to its end; returns the CompletedProcess."""
    return subprocess.run(runner_argv(args, multirun), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start_runner(args: List[str], stderr_file: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m runner ARGS` in the background, its stderr into stderr_file."""
    with open(stderr_file, "wb") as err:
        return subprocess.Popen(runner_argv(args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, **(env or {})})
