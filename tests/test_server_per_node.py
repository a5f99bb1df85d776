"""mode=server_per_node for real: `vllm serve` per host on the CPU, async clients, a shared file queue."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from helpers.cli import ROOT, run_runner
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, run_shm_files, shm_files, tagged_env, wait_for

pytestmark = pytest.mark.engine

GENES = {
    "a.tsv": ["G1\tEscherichia coli\tdnaA\treplication initiator", "G1\tEscherichia coli\trecA\trecombinase"],
    "b.tsv": ["G2\tBacillus subtilis\tspo0A\tsporulation regulator", "G2\tonly two columns",
              "G2\tBacillus subtilis\tsigA\tsigma factor"],
    "c.tsv": ["G3\tMycobacterium tuberculosis\tkatG\tcatalase-peroxidase"],
}


# the genome TSVs of GENES: four columns, two of them the records' ids
TSV = ["input=tsv", "input.columns=[genome_id,organism,gene_id,description]", "input.id_fields=[genome_id,gene_id]",
       "input.template='In one sentence, what is the function of the {organism} gene {gene_id} ({description})?'"]


def _args(inputs, run, *extra):
    """mode.port=0: each server on a port the OS picks (tests never share one)."""
    return ["mode=server_per_node", f"input.path={inputs}", "mode.port=0", "mode.concurrency=8",
            "sampling.max_tokens=24", f"hydra.run.dir={run}", *extra]


def test_two_hosts_three_files_every_line_once_and_malformed_lines_reported(tmp_path):
    inputs = write_inputs(tmp_path / "in", GENES)
    run = tmp_path / "run"
    proc = run_runner(_args(inputs, run, "nodes=2", *TSV))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, lines in GENES.items():
        records = read_jsonl(run / "out" / f"{name}.jsonl")
        assert [r["line"] for r in records] == list(range(1, len(lines) + 1))
        for record, line in zip(records, lines):
            assert record["genome_id"] == line.split("\t")[0]
    bad = read_jsonl(run / "out" / "b.tsv.jsonl")[1]
    assert bad["status"] == "ERROR" and "the row has 2 tab-separated columns, fewer than the 4" in bad["error"]
    assert bad["input"] == "G2\tonly two columns"
    good = [r for name in GENES for r in read_jsonl(run / "out" / f"{name}.jsonl") if r["status"] == "SUCCESS"]
    assert len(good) == 5 and all(r["response"] and r["output_tokens"] > 0 for r in good)
    body = ["prompt", "response", "status", "error", "prompt_tokens", "output_tokens", "finish_reason"]
    assert all(list(r) == ["file", "line", "genome_id", "gene_id", *body] and r["gene_id"] in r["prompt"] for r in good)
    assert list(bad) == ["file", "line", "genome_id", "input", *body] and bad["prompt"] is None
    hosts = [json.loads((run / "stats" / f"host{h}.json").read_text()) for h in (0, 1)]
    assert sorted(f for h in hosts for f in h["files"]) == ["a.tsv", "b.tsv", "c.tsv"]
    assert all(h["files"] for h in hosts), "a host idled while work remained"
    assert (run / "logs" / "host0" / "vllm-serve.log").stat().st_size > 0
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["prompts"], summary["errors"]) == (6, 1)
    progress = subprocess.run([sys.executable, "-m", "runner.progress", str(run / "job.yaml")], cwd=ROOT,
                              capture_output=True, text=True, check=True)
    assert progress.stdout == (f"{run}: 3 of 3 files finished, 6/6 lines done (100.0%), 1 with an ERROR record "
                               "(a rerun retries them)\n")


def _kill_server_when(ledger, tag, min_records, run_over):
    """SIGKILL the run's server (its guard's whole process group) once the ledger holds min_records."""
    while not run_over.is_set():
        if ledger.exists() and len(ledger.read_text().splitlines()) >= min_records:
            for guard in _server_pids(tag, "runner.server_guard"):
                os.killpg(guard, signal.SIGKILL)
            return True
        time.sleep(0.2)
    return False


def test_a_killed_server_is_restarted_and_every_line_answered_exactly_once(tmp_path):
    lines = [f"Write a story about the number {i}." for i in range(1, 17)]
    inputs = write_inputs(tmp_path / "in", {"story.txt": lines})
    run = tmp_path / "run"
    args = _args(inputs, run, "mode.concurrency=4", "mode.health_interval_s=1", "sampling.max_tokens=32")
    killed, run_over, tag = {}, threading.Event(), uuid.uuid4().hex
    killer = threading.Thread(target=lambda: killed.setdefault(
        "ok", _kill_server_when(run / "out" / "story.txt.log.jsonl", tag, 4, run_over)))
    killer.start()
    proc = run_runner(args, env=tagged_env(tag))
    run_over.set()
    killer.join()
    assert killed["ok"], "the server was never killed"
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(run / "out" / "story.txt.jsonl")
    assert [r["line"] for r in records] == list(range(1, 17))
    assert all(r["status"] == "SUCCESS" for r in records)
    stats = json.loads((run / "stats" / "host0.json").read_text())
    assert stats["restarts"] == 1


def test_a_template_field_that_is_no_column_fails_before_launch(tmp_path):
    inputs = write_inputs(tmp_path / "in", GENES)
    proc = run_runner(_args(inputs, tmp_path / "run", *TSV, "input.template='Describe {gene}'"))
    assert proc.returncode == 2
    assert "input.template uses ['gene'], which are not fields of input.columns" in proc.stderr
    assert not (tmp_path / "run" / "logs" / "run0.log").exists()


def _server_pids(tag, marker="vllm.entrypoints.openai.api_server"):
    """The run's processes whose argv holds `marker` (the server guard's argv holds the server's too)."""
    return [pid for pid, argv in run_processes(tag).items() if marker in argv]


def _start_a_long_job(tmp_path, *extra):
    """A one-host job over 200 lines, started in the background; returns once its first answer is written,
    with the job, its run dir and the tag that finds its processes."""
    inputs = write_inputs(tmp_path / "in", {"long.txt": [f"Write a long story about {i}." for i in range(200)]})
    run, tag = tmp_path / "run", uuid.uuid4().hex
    args = _args(inputs, run, "sampling.max_tokens=64", *extra)
    job = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, **tagged_env(tag)})
    ledger = run / "out" / "long.txt.log.jsonl"
    deadline = time.time() + 600
    while not (ledger.exists() and ledger.read_text()) and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert _server_pids(tag), "the server never answered"
    return job, run, tag


def test_a_cancelled_job_stops_its_server(tmp_path):
    """SIGTERM to the job (as scancel or qdel send it) leaves no `vllm serve` holding the accelerator."""
    job, run, tag = _start_a_long_job(tmp_path, "mode.stop_grace_s=10", "mode.progress_every_s=1")
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=60) != 0
    assert wait_for(lambda: not run_processes(tag), 60), "a process of the cancelled job outlived it"
    stats = json.loads((run / "stats" / "host0.json").read_text())
    assert 0 < stats["answered"] < 200
    assert (run / "logs" / "host0" / "vllm-serve.log").exists()
    host_log = (run / "logs" / "run0.log").read_text()
    # progress while the file was answered
    assert re.search(r"long\.txt: \d+/200 lines answered \(0 errors\), [\d.]+ output tokens/s, "
                     r"(about \d+m\d\ds left|time left unknown yet)", host_log)


def test_a_host_killed_outright_takes_its_server_down(tmp_path):
    """SIGKILL of a host's worker (no clean-up can run): its server guard takes the server's group down."""
    job, run, tag = _start_a_long_job(tmp_path)
    workers = _server_pids(tag, "runner.worker")
    assert len(workers) == 1, run_processes(tag)
    shared = run_shm_files(tag)  # this run's own: other runs beside it may make and remove theirs meanwhile
    assert shared, "the run's engine shares no semaphore: the leak check below would check nothing"
    os.kill(workers[0], signal.SIGKILL)
    assert job.wait(timeout=60) != 0
    assert wait_for(lambda: not run_processes(tag), 30), f"outlived its killed host: {run_processes(tag)}"
    assert wait_for(lambda: not shared & shm_files(), 10), f"leaked in /dev/shm: {shared & shm_files()}"


def test_a_host_whose_server_stays_down_leaves_its_lines_for_a_rerun(tmp_path):
    """Past max_restarts the host gives up: the lines not answered get no ERROR record (a rerun answers them)."""
    job, run, tag = _start_a_long_job(tmp_path, "mode.max_restarts=0", "mode.health_interval_s=1")
    for guard in _server_pids(tag, "runner.server_guard"):
        os.killpg(guard, signal.SIGKILL)
    assert job.wait(timeout=120) != 0
    records = read_jsonl(run / "out" / "long.txt.log.jsonl")
    assert 0 < len(records) < 200
    assert all(r["status"] == "SUCCESS" for r in records), {r["error"] for r in records if r["status"] != "SUCCESS"}
    assert not (run / "out" / "long.txt.jsonl").exists()


def test_a_host_starts_its_next_file_before_the_last_one_ends(tmp_path):
    """Files overlap on a host: once no line of a file is left to send, the next file's lines fill the batch."""
    files = {"a.txt": [f"Name a color, {i}." for i in range(8)], "b.txt": [f"Name a fruit, {i}." for i in range(3)]}
    inputs = write_inputs(tmp_path / "in", files)
    run = tmp_path / "run"
    proc = run_runner(_args(inputs, run, "mode.concurrency=4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, lines in files.items():
        assert [r["line"] for r in read_jsonl(run / "out" / f"{name}.jsonl")] == list(range(1, len(lines) + 1))
    host_log = (run / "logs" / "run0.log").read_text()
    assert host_log.index("b.txt: started") < host_log.index("a.txt: 8 lines answered")
    stats = json.loads((run / "stats" / "host0.json").read_text())
    assert stats["files"] == ["a.txt", "b.txt"] and stats["answered"] == 11
