"""launcher=local (the default) for real: the launcher suite, and mode=per_tile's two local ranks, each with its
own vLLM engine on the CPU, checked on the suite's one real run."""

import json

import pytest

from helpers.cli import run_runner
from helpers.inputs import read_jsonl
from helpers.launcher_suite import LauncherSuite

RANK0 = ["What is the capital of France?", "", "Name a primary color."]
RANK1 = ["What is 2 + 2?", "Say hello.", "Name a planet."]


class TestLocalLauncher(LauncherSuite):
    launcher = "local"
    script = "job.sh"
    inputs = {"0.in": RANK0, "1.in": RANK1}
    run_overrides = ("sampling.max_tokens=24",)  # local_cpu's two ranks

    def nothing_submitted(self, tmp, run):
        return not list((run / "logs").glob("run*.log"))

    @pytest.mark.engine
    def test_each_rank_answers_its_own_file(self, real_run):
        for rank in (0, 1):
            records = read_jsonl(real_run.run / "out" / f"{rank}.out")
            assert all(r["rank"] == rank and r["finish_reason"] for r in records)

    @pytest.mark.engine
    def test_a_chat_question_gets_a_sensible_answer(self, real_run):
        first = read_jsonl(real_run.run / "out" / "0.out")[0]
        assert "Paris" in first["response"]
        assert list(first) == ["rank", "line", "prompt", "response", "status", "error", "prompt_tokens",
                               "output_tokens", "finish_reason"]

    @pytest.mark.engine
    def test_summary_counts_prompts_and_tokens(self, real_run):
        run = real_run.run
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["prompts"], summary["workers"], summary["answered"]) == (5, 2, 5)
        assert (summary["resumed"], summary["error_lines"]) == (0, 0)
        records = [r for k in (0, 1) for r in read_jsonl(run / "out" / f"{k}.out")]
        assert summary["output_tokens"] == sum(r["output_tokens"] for r in records)
        assert summary["wall_tokens_per_s"] > 0
        # the headline: the ranks' generation rates summed (they generate side by side)
        rates = [w["output_tokens"] / w["generate_s"] for w in summary["per_worker"]]
        assert summary["generation_tokens_per_s"] == pytest.approx(sum(rates), abs=0.15)  # rounded to 0.1 each
        assert summary["generation_tokens_per_s"] > summary["wall_tokens_per_s"]
        assert all(w["output_tokens_per_s"] > 0 and w["engine_start_s"] > 0 for w in summary["per_worker"])
        assert all(0 < w["record_s"] < w["generate_s"] for w in summary["per_worker"])  # the rank's own share

    @pytest.mark.engine
    def test_rerun_of_a_finished_run_does_nothing_again(self, real_run):
        run = real_run.run
        before = {rank: (run / "out" / f"{rank}.out").read_bytes() for rank in (0, 1)}
        proc = run_runner(real_run.args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert {rank: (run / "out" / f"{rank}.out").read_bytes() for rank in (0, 1)} == before
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["prompts"], summary["answered"], summary["output_tokens"]) == (5, 0, 0)
        assert all(w["engine_start_s"] == 0 for w in summary["per_worker"])  # no engine was started
