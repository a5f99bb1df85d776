"""server_per_node under faults that are no fault of the lines, for real (vllm serve on the CPU): a prefill longer
than mode.stall_s is work, not a hang; a request the server refuses (4xx) is that line's ERROR alone; an engine
that dies on one (poison) line leaves only that line ERROR."""

import json

import pytest

from helpers.cli import run_runner
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
