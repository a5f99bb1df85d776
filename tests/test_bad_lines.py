"""One bad line never blocks the others, for real: a line too long for SmolLM2's context among good ones."""

import json

import pytest

from helpers.cli import run_runner
from helpers.inputs import read_jsonl, write_inputs

pytestmark = pytest.mark.engine

LONG = " ".join(["word"] * 3000)  # about 3000 tokens, over SmolLM2's max_model_len of 2048
LINES = ["What is the capital of France?", LONG, "Say hello.", "Name a planet."]



def test_per_tile_records_the_long_line_answers_the_rest_and_a_rerun_finishes_too(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": LINES})
    run = tmp_path / "run"
    args = [f"input.path={inputs}", "mode.assign=by_rank", f"hydra.run.dir={run}", "cluster.ranks_per_node=1",
            "sampling.max_tokens=16",
            "mode.on_too_long=record"]
    for attempt in ("first", "rerun"):
        proc = run_runner(args)
        assert proc.returncode == 0, f"{attempt}: {proc.stderr[-3000:]}"
        records = read_jsonl(run / "out" / "0.out")
        assert [r["line"] for r in records] == [1, 2, 3, 4]
        bad = records[1]
        assert bad["status"] == "ERROR" and bad["output_tokens"] == 0 and bad["response"] is None
        assert "too long" in bad["error"] and "> max_model_len=2048" in bad["error"]
        good = [records[i] for i in (0, 2, 3)]
        assert all(r["status"] == "SUCCESS" and r["error"] == "" and r["output_tokens"] > 0 for r in good)
        assert "Paris" in good[0]["response"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["prompts"] == 4


MEDIUM = " ".join(["word"] * 1000)  # fits the 2048 the launch checks against, not the 512 the server is given


def test_server_per_node_records_refused_lines_at_once_and_answers_the_rest(tmp_path):
    """The launch finds LONG too long (on_too_long=record: an ERROR record, never sent). MEDIUM passes that check,
    but the server runs with --max-model-len 512 (mode.serve_args) and answers it HTTP 400: one ERROR record with
    the server's message, no retry (a retry would wait mode.retry_backoff_s=60 first)."""
    inputs = write_inputs(tmp_path / "in", {"a.txt": LINES + [MEDIUM]})
    run = tmp_path / "run"
    proc = run_runner(["mode=server_per_node", f"input.path={inputs}", "mode.port=0", "mode.concurrency=4", "mode.retries=3", "mode.retry_backoff_s=60",
                       "mode.serve_args=[--max-model-len,'512']", "mode.on_too_long=record",
                       "sampling.max_tokens=16", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(run / "out" / "a.txt.jsonl")
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    long, medium = records[1], records[4]
    assert long["status"] == "ERROR" and "too long" in long["error"] and "> max_model_len=2048" in long["error"]
    assert medium["status"] == "ERROR" and medium["error"].startswith("HTTP 400: ")
    assert "maximum context length is 512" in medium["error"] and "retries" not in medium["error"]
    assert all(records[i]["status"] == "SUCCESS" and records[i]["output_tokens"] > 0 for i in (0, 2, 3))
    stats = json.loads((run / "stats" / "host0.json").read_text())
    assert stats["generate_s"] < 60, "the refused request was retried"
