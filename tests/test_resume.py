"""Exactly once across a crash: a per_tile run killed (SIGKILL, no clean-up) after its first rank finished,
then rerun with the same command, ends with every line answered once."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from helpers.cli import ROOT, run_runner
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, tagged_env, wait_for

pytestmark = pytest.mark.engine


def test_killed_run_resumes_and_answers_every_line_exactly_once(tmp_path):
    lines = {"0.in": ["Say yes.", "Say no."], "1.in": [f"Count to {i}." for i in range(1, 61)]}
    inputs = write_inputs(tmp_path / "in", lines)
    run = tmp_path / "run"
    args = [f"input.path={inputs}", "mode.assign=by_rank", "mode.max_in_flight=4", "sampling.max_tokens=24",
            f"hydra.run.dir={run}",
            "mode.progress_every_s=0.5"]
    tag = uuid.uuid4().hex
    first = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **tagged_env(tag)})
    deadline = time.time() + 600
    while not (run / "out" / "0.out").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)  # the launcher only: its ranks die with it (no orphan writes on)
    first.wait()
    assert wait_for(lambda: not run_processes(tag), 30), f"ranks outlived their launcher: {run_processes(tag)}"
    assert (run / "out" / "0.out").exists() and not (run / "out" / "1.out").exists()
    partial = run / "out" / "1.log.jsonl"
    text = partial.read_text() if partial.exists() else ""
    before = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]  # a torn last line is cut
    done_before = len(before)
    rank0_before = (run / "out" / "0.out").read_bytes()
    assert _progress(run).splitlines() == [
        f"{run}: 1 of 2 files finished, {2 + done_before}/62 lines done ({100 * (2 + done_before) / 62:.1f}%)",
        f"  1.in: {done_before}/60",
    ]

    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "out" / "0.out").read_bytes() == rank0_before
    records = read_jsonl(run / "out" / "1.out")
    assert [r["line"] for r in records] == list(range(1, 61))
    assert [r["prompt"] for r in records] == lines["1.in"]
    assert not partial.exists()
    assert re.search(rf"rank 1: \d+/{60 - done_before} lines answered \(0 errors\), [\d.]+ output tokens/s, "
                     r"about \d+m\d\ds left", (run / "logs" / "run1.log").read_text())
    assert _progress(run) == f"{run}: 2 of 2 files finished, 62/62 lines done (100.0%)\n"
    stats = json.loads((run / "stats" / "rank1.json").read_text())
    assert (stats["resumed"], stats["answered"]) == (done_before, 60 - done_before)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["prompts"], summary["resumed"]) == (62, 2 + done_before)
    # tokens (and so tokens/s) count this run's answers only: rank 0 was complete, rank 1 had done_before lines
    assert summary["output_tokens"] == sum(r["output_tokens"] for r in records) - sum(r["output_tokens"] for r in before)


def _progress(run) -> str:
    """`python -m runner.progress RUN`, as a user would type it on a login node."""
    proc = subprocess.run([sys.executable, "-m", "runner.progress", str(run)], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return proc.stdout

