"""A rerun reflects the inputs and the config as they are now (real vLLM on the CPU, real processes).

per_tile: a run killed (SIGKILL) mid-way, its input edited before the rerun (refused, then re-answered whole
with rerun=changed), lines appended after completion (answered), a changed config (refused before job.yaml is
rewritten), a rerun with nothing to do (true figures). server_per_node: ERROR records retried by default, a
finished file's appended line answered, a changed template refused and then answered again under rerun=all.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.cli import ROOT, run_runner
from helpers.inputs import read_jsonl, write_inputs

pytestmark = pytest.mark.engine

COUNT = [f"Count to {i}." for i in range(1, 41)]


def _progress(run) -> str:
    return subprocess.run([sys.executable, "-m", "runner.progress", str(run)], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def _kill_when(args, run, ready) -> None:
    """Start the runner in its own session and SIGKILL the whole group (as a node failure would) once ready()."""
    job = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not ready() and time.time() < deadline and job.poll() is None:
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()


def _records(path):
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def test_per_tile_rerun_after_a_kill_an_edit_an_append_and_a_config_change(tmp_path):
    lines = {"0.in": ["Say yes.", "Say no.", "Say yes."], "1.in": COUNT}  # line 3 repeats line 1
    inputs = write_inputs(tmp_path / "in", lines)
    run = tmp_path / "run"
    args = [f"input.path={inputs}", "mode.assign=by_rank", "mode.max_in_flight=4", "sampling.max_tokens=24",
            f"hydra.run.dir={run}"]
    ledger = run / "out" / "1.log.jsonl"
    _kill_when(args, run, lambda: (run / "out" / "0.out").exists() and len(_records(ledger)) >= 3)
    assert (run / "out" / "0.out").exists() and not (run / "out" / "1.out").exists()
    before = _records(ledger)
    with open(ledger, "ab") as f:  # a duplicate record (two runs at once would leave one): counted once
        f.write((json.dumps(before[0]) + "\n").encode())
    assert f"  1.in: {len(before)}/40" in _progress(run)

    # an edit before the last answered line: refused before anything starts or job.yaml changes
    edited = ["Count to one hundred."] + COUNT[1:]
    (inputs / "1.in").write_text("".join(f"{line}\n" for line in edited))
    job_yaml = (run / "job.yaml").read_bytes()
    proc = run_runner(args)
    assert proc.returncode == 2 and "1.in changed at or before line 1" in proc.stderr and "rerun=changed" in proc.stderr
    assert (run / "job.yaml").read_bytes() == job_yaml and _records(ledger)[: len(before)] == before

    rank0 = (run / "out" / "0.out").read_bytes()
    proc = run_runner([*args, "rerun=changed"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(run / "out" / "1.out")
    assert [(r["line"], r["prompt"]) for r in records] == list(enumerate(edited, start=1))  # whole, once
    assert (run / "out" / "0.out").read_bytes() == rank0
    summary = _summary(run)
    assert (summary["prompts"], summary["lines"], summary["answered"], summary["resumed"]) == (43, 43, 40, 3)

    # lines appended after the output was finished are answered; the earlier records stay as they were
    with open(inputs / "0.in", "a") as f:
        f.write("Say maybe.\nSay yes.\n")
    assert _progress(run).startswith(f"{run}: 1 of 2 files finished, 43/45 lines done")
    rank1 = (run / "out" / "1.out").read_bytes()
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out0 = read_jsonl(run / "out" / "0.out")
    assert [(r["line"], r["prompt"]) for r in out0] == list(enumerate(lines["0.in"] + ["Say maybe.", "Say yes."], 1))
    assert out0[:3] == [json.loads(line) for line in rank0.decode().splitlines()]
    assert (run / "out" / "1.out").read_bytes() == rank1
    summary = _summary(run)
    assert (summary["prompts"], summary["answered"], summary["resumed"]) == (45, 2, 43)
    assert summary["output_tokens"] == sum(r["output_tokens"] for r in out0[3:])
    worker = next(w for w in summary["per_worker"] if w["name"] == "rank0")
    assert summary["generation_tokens_per_s"] >= worker["output_tokens"] / worker["generate_s"] * 0.99
    assert summary["wall_tokens_per_s"] < summary["generation_tokens_per_s"]  # engine start is in the wall time

    # nothing to do: true figures, not the last run's
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(run)
    assert (summary["prompts"], summary["answered"], summary["output_tokens"]) == (45, 0, 0)
    assert _progress(run) == f"{run}: 2 of 2 files finished, 45/45 lines done (100.0%)\n"

    # a changed answer-shaping config is refused, before job.yaml is rewritten
    job_yaml = (run / "job.yaml").read_bytes()
    proc = run_runner([a if a != "sampling.max_tokens=24" else "sampling.max_tokens=12" for a in args])
    assert proc.returncode == 2 and "sampling.max_tokens" in proc.stderr and "rerun=all" in proc.stderr
    assert (run / "job.yaml").read_bytes() == job_yaml



def test_server_per_node_retries_errors_answers_appends_and_reanswers_all_on_a_new_template(tmp_path):
    files = {"a.txt": ["Name a color.", "Name a fruit.", "Name a color."], "b.txt": ["Say hi.", "Say bye."]}
    inputs = write_inputs(tmp_path / "in", files)
    run = tmp_path / "run"
    args = ["mode=server_per_node", f"input.path={inputs}", "mode.port=0", "mode.concurrency=4",
            "sampling.max_tokens=16", f"hydra.run.dir={run}"]
    # every request times out: each line gets an ERROR record, and the files are finished with them
    proc = run_runner([*args, "mode.request_timeout_s=0.001", "mode.retries=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(r["status"] == "ERROR" for name in files for r in read_jsonl(run / "out" / f"{name}.jsonl"))
    assert _summary(run)["error_lines"] == 5
    assert "5 with an ERROR record" in _progress(run)

    with open(inputs / "a.txt", "a") as f:
        f.write("Name a planet.\n")
    proc = run_runner(args)  # the default rerun=errors, request_timeout_s back to normal
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = {}
    for name, count in (("a.txt", 4), ("b.txt", 2)):
        records = read_jsonl(run / "out" / f"{name}.jsonl")
        assert [r["line"] for r in records] == list(range(1, count + 1))  # newest record of a line, once
        assert all(r["status"] == "SUCCESS" and r["output_tokens"] > 0 for r in records)
        first[name] = records
    summary = _summary(run)
    assert (summary["prompts"], summary["answered"], summary["error_lines"], summary["resumed"]) == (6, 6, 0, 0)

    job_yaml = (run / "job.yaml").read_bytes()
    template = "input.template='Answer in one word: {line}'"
    proc = run_runner([*args, template])
    assert proc.returncode == 2 and "input.template" in proc.stderr and "rerun=all" in proc.stderr
    assert (run / "job.yaml").read_bytes() == job_yaml

    proc = run_runner([*args, template, "rerun=all"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, records in first.items():
        again = read_jsonl(run / "out" / f"{name}.jsonl")
        assert [r["line"] for r in again] == [r["line"] for r in records]
        assert all(new["prompt_tokens"] > old["prompt_tokens"] for new, old in zip(again, records))  # new template
    assert _summary(run)["answered"] == 6

    proc = run_runner([*args, template])  # same config again: nothing to do, and no stale host stats summed in
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(run)
    assert (summary["prompts"], summary["answered"], summary["output_tokens"], summary["workers"]) == (6, 0, 0, 1)
