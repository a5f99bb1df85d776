"""per_tile when its engine dies or hangs under a line: real SmolLM2 on CPU, the engine core killed or stopped at
the process boundary by a test-only sitecustomize (tests/helpers/poison) when a request holds its marker."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import ROOT
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, tagged_env, wait_for

POISON = Path(__file__).resolve().parent / "helpers" / "poison"


def _run(args, tag, err: Path, timeout: float) -> int:
    env = {**os.environ, **tagged_env(tag), "PYTHONPATH": str(POISON)}
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(err, "wb"), env=env)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1  # hung: the finally takes it down
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in run_processes(tag):  # a stopped engine core left behind by the run (its own session)
            os.kill(pid, signal.SIGKILL)


@pytest.mark.engine
def test_a_line_that_kills_the_engine_and_one_that_hangs_it_get_an_error_record_and_every_other_line_once(
        tmp_path, tag):
    """The engine core in a process of its own (as on GPU clusters), two ranks. Before: a killed engine core left
    the rank blocked in vLLM's step for good (its output thread ends without a word) and a stopped one hung it to
    the walltime; a rerun met the same line and died again, so the lines after it never finished. Now each rank
    builds its engine again and answers the lines in flight at the death in halves, each half alone."""
    lines = ["Say yes.", "Say no.", "POISON-PILL say maybe.", "Name a fruit.", "HANG-PILL name a colour.",
             "Name a tree.", "Name a bird."]
    inputs, run = write_inputs(tmp_path / "in", {"a.txt": lines}), tmp_path / "run"
    args = [f"input.path={inputs}", f"hydra.run.dir={run}", "mode.max_in_flight=2", "sampling.max_tokens=8",
            "mode.stall_s=10", "mode.progress_every_s=1", "cluster.env.VLLM_ENABLE_V1_MULTIPROCESSING=1"]
    code = _run(args, tag, tmp_path / "run.err", timeout=420)
    tail = (tmp_path / "run.err").read_text(errors="replace")[-3000:]
    assert code == 0, tail
    assert wait_for(lambda: not run_processes(tag), 30), run_processes(tag)  # the stopped core was not orphaned
    records = read_jsonl(run / "out" / "a.txt.jsonl")
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 6, 7]  # every line once
    status = {r["line"]: r["status"] for r in records}
    assert status == {1: "SUCCESS", 2: "SUCCESS", 3: "ERROR", 4: "SUCCESS", 5: "ERROR", 6: "SUCCESS", 7: "SUCCESS"}
    assert "died" in records[2]["error"] and "hung" in records[4]["error"], (records[2], records[4])
    assert records[2]["output_tokens"] == 0 and records[4]["output_tokens"] == 0
    # one rank had the poison line, the other the hanging one; each built its engine again, its lines kept
    stats = [json.loads((run / "stats" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sum(s["answered"] for s in stats) == 7 and [s["errors"] for s in stats] == [1, 1]
    assert all(1 <= s["restarts"] <= 2 for s in stats), stats  # once under the pair in flight, once alone
    assert json.loads((run / "summary.json").read_text())["answered"] == 7
