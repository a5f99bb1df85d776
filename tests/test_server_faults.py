"""server_per_node under faults that are no fault of the lines, for real (vllm serve on the CPU): a prefill longer
than mode.stall_s is work, not a hang; a request the server refuses (4xx) is that line's ERROR alone; an engine
that dies on one (poison) line leaves only that line ERROR."""

import contextlib
import json
import os
import signal
import threading

import pytest

from helpers.cli import run_runner, start_runner
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, tagged_env, wait_for

pytestmark = pytest.mark.engine


def _batch(custom_id, prompt, **body):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/completions",
                       "body": {"prompt": prompt, **body}})


def test_a_long_prefill_is_not_a_hang_and_a_refused_request_is_only_its_own_error(tmp_path, tag):
    """One prompt of about 1700 tokens prefilled 32 tokens a step (+engine.max_num_batched_tokens=32): seconds
    without a generated token, longer than mode.stall_s=3, while vLLM's KV cache fills chunk by chunk. Beside it,
    good lines, one with a sampling value vLLM refuses (temperature -1) and one whose max_tokens exceeds the
    context (both HTTP 400): each line answered once, those two ERROR with the server's reason, no restart."""
    long_prompt = " ".join(f"word{i}" for i in range(450))
    lines = [_batch("long", long_prompt, max_tokens=4), *(_batch(f"q{i}", f"Count to {i}.") for i in range(5)),
             _batch("cold", "Say hi.", temperature=-1), _batch("huge", "Say hi.", max_tokens=5000)]
    inputs = write_inputs(tmp_path / "in", {"b.jsonl": lines})
    run = tmp_path / "run"
    proc = run_runner(["mode=server_per_node", "input=openai_batch", f"input.path={inputs}", "mode.port=0",
                       "mode.concurrency=8", "sampling.max_tokens=8", "output.format=jsonl", "mode.stall_s=3", "mode.health_interval_s=1",
                       "+engine.max_num_batched_tokens=32", f"hydra.run.dir={run}"], env=tagged_env(tag))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["custom_id"]: r for r in read_jsonl(run / "out" / "b.jsonl.jsonl")}
    assert sorted(r["line"] for r in records.values()) == list(range(1, len(lines) + 1))
    errors = {k: r["error"] for k, r in records.items() if r["status"] == "ERROR"}
    assert sorted(errors) == ["cold", "huge"], errors
    assert all(e.startswith("HTTP 400") for e in errors.values()), errors
    assert records["long"]["prompt_tokens"] > 1500 and records["long"]["output_tokens"] > 0
    stats = json.loads((run / "stats" / "host0.json").read_text())
    assert (stats["restarts"], stats["answered"], stats["errors"]) == (0, len(lines), 2)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["prompts"], summary["errors"]) == (len(lines), 2)
    assert wait_for(lambda: not run_processes(tag), 30), f"outlived the run: {run_processes(tag)}"


def _engine_cores(tag):
    """The run's engine core processes: members of a server guard's session that are neither the guard, the API
    server nor multiprocessing's resource tracker."""
    processes = run_processes(tag)
    guards = {pid for pid, argv in processes.items() if "runner.server_guard" in argv}
    cores = []
    for pid, argv in processes.items():
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        command = " ".join(argv)
        if (int(stat[stat.rfind(")") + 2:].split()[3]) in guards and pid not in guards
                and "api_server" not in command and "resource_tracker" not in command):
            cores.append(pid)
    return cores


class _Poison(threading.Thread):
    """A line that kills the engine: each time the server logs a request carrying `marker` (its sampling
    values, --enable-log-requests), SIGKILL the engine core, as a request that crashes vLLM would."""

    def __init__(self, tag, scratch, marker):
        super().__init__(daemon=True)
        self.tag, self.scratch, self.marker = tag, scratch, marker
        self.over, self.kills, self._offset = threading.Event(), 0, 0

    def _new_requests(self) -> int:
        found = 0
        for log in self.scratch.glob("runner-*-host0/vllm-serve.log"):
            with open(log, "rb") as f:
                f.seek(self._offset)
                text = f.read().decode(errors="replace")
            cut = text.rfind("\n") + 1  # whole lines only
            self._offset += len(text[:cut].encode())
            found += sum(1 for line in text[:cut].splitlines() if "Received request" in line and self.marker in line)
        return found

    def run(self):
        while not self.over.wait(0.05):
            if self._new_requests():
                for pid in _engine_cores(self.tag):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.kills += 1


def test_a_line_that_kills_the_engine_is_the_only_error_and_every_other_line_is_answered_once(tmp_path, tag):
    """The engine dies each time it gets one (poison) line, with up to 3 other lines in flight beside it: the lines
    in flight at a death are resent in halves alone on the server, until the poison line has killed it twice as
    its only request (2 + log2(4) deaths at most). Only it ends ERROR; every other line SUCCESS, once; the summary
    counts one error; nothing outlives the run."""
    lines = [_batch(f"s{i}", f"Write a short story about the number {i}.", max_tokens=32) for i in range(12)]
    # min_tokens: it cannot end (EOS) before the kill its request brings
    lines[2] = _batch("poison", "Write a short story about the number 2.", max_tokens=64, min_tokens=64, seed=424242)
    inputs = write_inputs(tmp_path / "in", {"b.jsonl": lines})
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    poison = _Poison(tag, scratch, "seed=424242")
    poison.start()
    try:
        proc = run_runner(["mode=server_per_node", "input=openai_batch", f"input.path={inputs}", "mode.port=0",
                           "mode.concurrency=4", "output.format=jsonl", "mode.health_interval_s=1",
                           "mode.retry_backoff_s=0.2", f"mode.scratch_dir={scratch}",
                           "mode.serve_args=[--enable-log-requests]", f"hydra.run.dir={run}"], env=tagged_env(tag))
    finally:
        poison.over.set()
        poison.join()
    assert 2 <= poison.kills <= 4, poison.kills  # with others, in a half of them, then twice alone
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(run / "out" / "b.jsonl.jsonl")
    assert [r["line"] for r in records] == list(range(1, 13))
    errors = {r["custom_id"]: r["error"] for r in records if r["status"] == "ERROR"}
    assert list(errors) == ["poison"], errors
    assert "engine died 2 times" in errors["poison"]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["prompts"], summary["errors"]) == (12, 1)
    stats = json.loads((run / "stats" / "host0.json").read_text())
    assert (stats["restarts"], stats["answered"], stats["errors"]) == (poison.kills, 12, 1)
    assert wait_for(lambda: not run_processes(tag), 30), f"outlived the run: {run_processes(tag)}"


def test_deaths_far_apart_do_not_use_up_max_restarts(tmp_path, tag):
    """mode.max_restarts bounds restarts in a row: with max_restarts=1, an engine killed twice with lines
    answered between the two deaths is restarted both times and the job answers every line once (each poison
    line costs two deaths, so two of them used to make a host give up)."""
    lines = [_batch(f"s{i}", f"Write a short story about the number {i}.", max_tokens=16) for i in range(40)]
    inputs = write_inputs(tmp_path / "in", {"b.jsonl": lines})
    run = tmp_path / "run"
    args = ["mode=server_per_node", "input=openai_batch", f"input.path={inputs}", "mode.port=0", "mode.concurrency=4",
            "output.format=jsonl", "mode.health_interval_s=1", "mode.retry_backoff_s=0.2", "mode.max_restarts=1",
            f"hydra.run.dir={run}"]
    job = start_runner(args, tmp_path / "launch.err", tagged_env(tag))
    ledger = run / "out" / "b.jsonl.log.jsonl"

    def answered():
        return {json.loads(line)["line"] for line in ledger.read_text().splitlines()} if ledger.exists() else set()

    def kill_the_engine():
        cores = _engine_cores(tag)
        assert cores and job.poll() is None, (cores, job.poll())
        for pid in cores:
            os.kill(pid, signal.SIGKILL)

    try:
        assert wait_for(lambda: len(answered()) >= 4 or job.poll() is not None, 600), answered()
        kill_the_engine()
        # lines go out in order, at most 4 in flight: those in flight at the death are among these
        suspects = set(range(1, len(answered()) + 5))
        # the second death once they are answered (a line in flight at both would be ERROR), and 8 more since
        assert wait_for(lambda: suspects <= answered() and len(answered()) >= len(suspects) + 8, 600), answered()
        kill_the_engine()
        assert job.wait(timeout=600) == 0, (tmp_path / "launch.err").read_text()[-3000:]
    finally:
        if job.poll() is None:
            job.kill()
    records = read_jsonl(run / "out" / "b.jsonl.jsonl")
    assert [r["line"] for r in records] == list(range(1, 41)) and {r["status"] for r in records} == {"SUCCESS"}
    stats = json.loads((run / "stats" / "host0.json").read_text())
    assert (stats["restarts"], stats["answered"], stats["errors"]) == (2, 40, 0)
    assert wait_for(lambda: not run_processes(tag), 30), f"outlived the run: {run_processes(tag)}"
