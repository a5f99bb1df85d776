"""python -m runner mode=per_tile for real: two local ranks, each with its own vLLM engine on the CPU."""

import json

import pytest

from helpers.cli import run_runner
from helpers.inputs import read_jsonl, write_inputs

pytestmark = pytest.mark.engine

RANK0 = ["What is the capital of France?", "", "Name a primary color."]
RANK1 = ["What is 2 + 2?", "Say hello.", "Name a planet."]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("per_tile")
    inputs = write_inputs(tmp / "in", {"0.in": RANK0, "1.in": RANK1})
    args = [f"mode.input_dir={inputs}", f"hydra.run.dir={tmp / 'run'}", "sampling.max_tokens=24"]
    return tmp / "run", args, run_runner(args)


def test_every_line_is_answered_once_per_rank(two_rank_run):
    run, _, proc = two_rank_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank, lines in ((0, RANK0), (1, RANK1)):
        records = read_jsonl(run / "out" / f"{rank}.out")
        expected = [(n, text) for n, text in enumerate(lines, start=1) if text]
        assert [(r["line"], r["prompt"]) for r in records] == expected
        assert all(r["rank"] == rank and r["output_tokens"] > 0 and r["finish_reason"] for r in records)


def test_a_chat_question_gets_a_sensible_answer(two_rank_run):
    run, _, _ = two_rank_run
    first = read_jsonl(run / "out" / "0.out")[0]
    assert "Paris" in first["text"]


def test_summary_counts_prompts_and_tokens(two_rank_run):
    run, _, proc = two_rank_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["prompts"] == 5 and summary["workers"] == 2
    assert summary["output_tokens"] == sum(r["output_tokens"] for k in (0, 1) for r in read_jsonl(run / "out" / f"{k}.out"))
    assert summary["wall_tokens_per_s"] > 0
    # the headline: the ranks' generation rates summed (they generate side by side)
    rates = [w["output_tokens"] / w["generate_s"] for w in summary["per_worker"]]
    assert summary["generation_tokens_per_s"] == pytest.approx(sum(rates), abs=0.15)  # rounded to 0.1 each
    assert summary["generation_tokens_per_s"] > summary["wall_tokens_per_s"]
    assert all(w["output_tokens_per_s"] > 0 and w["engine_start_s"] > 0 for w in summary["per_worker"])
    assert all(0 < w["record_s"] < w["generate_s"] for w in summary["per_worker"])  # the rank's own share
    assert "5/5 lines answered (0 from an earlier run, 0 with an ERROR record); this run: 5 answered" in proc.stderr


def test_rerun_of_a_finished_run_does_nothing_again(two_rank_run):
    run, args, _ = two_rank_run
    before = (run / "out" / "0.out").read_bytes()
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "out" / "0.out").read_bytes() == before
    assert "complete already" in (run / "logs" / "run0.log").read_text()
