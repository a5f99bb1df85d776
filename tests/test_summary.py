"""summary.json and runner.progress from a run folder as a killed and rerun job leaves it (no engine): distinct
lines counted, stats of an earlier attempt not summed in, generation rate as the headline."""

import json

from omegaconf import OmegaConf

from helpers.inputs import write_inputs
from runner.job import RunDir
from runner.progress import describe, progress
from runner.stats import WorkerStats, write
from runner.summary import summarize


def _run_folder(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": [f"q{i}" for i in range(1, 21)], "1.in": ["a", "b"]})
    run = RunDir(tmp_path / "run").make()
    OmegaConf.save(OmegaConf.create({"mode": {"name": "per_tile"}, "input": {"name": "lines", "path": str(inputs)}, "nodes": 1,
                                     "cluster": {"ranks_per_node": 2}}), run.job_file)
    with open(run.out / "0.log.jsonl", "w") as f:  # 18 distinct lines and 2 of them twice: 20 records
        for line in [*range(1, 19), 3, 7]:
            f.write(json.dumps({"line": line, "status": "SUCCESS"}) + "\n")
        f.write('{"line": 19, "sta')  # torn by a kill
    with open(run.out / "1.log.jsonl", "w") as f:
        f.write(json.dumps({"line": 1, "status": "ERROR"}) + "\n")
    return run


def test_a_ledger_with_duplicates_reads_its_distinct_lines(tmp_path):
    run = _run_folder(tmp_path)
    files = progress(run)
    assert [(f.name, f.answered, f.lines, f.errors) for f in files] == [("0.in", 18, 20, 0), ("1.in", 1, 2, 1)]
    assert describe(run, files).splitlines()[0] == (f"{run.root}: 0 of 2 files finished, 19/22 lines done (86.4%), "
                                                    "1 with an ERROR record (a rerun retries them)")


def test_summary_sums_this_attempt_only_and_heads_with_the_generation_rate(tmp_path, monkeypatch):
    run = _run_folder(tmp_path)
    monkeypatch.setenv("RUNNER_ATTEMPT", "old")
    write(run, WorkerStats("rank2", answered=50, output_tokens=5000, generate_s=1.0))
    monkeypatch.setenv("RUNNER_ATTEMPT", "now")
    for rank, tokens in ((0, 1000), (1, 300)):
        write(run, WorkerStats(f"rank{rank}", answered=2, output_tokens=tokens, generate_s=2.0, engine_start_s=30.0,
                               wall_s=40.0))
    summary = summarize(run, wall_s=50.0)
    assert (summary["prompts"], summary["lines"], summary["answered"], summary["resumed"]) == (19, 22, 4, 15)
    assert (summary["workers"], summary["output_tokens"], summary["error_lines"]) == (2, 1300, 1)
    assert summary["generation_tokens_per_s"] == 650.0  # 500 + 150: the ranks generate side by side
    assert summary["wall_tokens_per_s"] == 26.0
    assert summary["per_worker"][0]["engine_start_s"] == 30.0
    monkeypatch.setenv("RUNNER_ATTEMPT", "manual-later")  # `python -m runner.summary` after the job: the newest
    assert summarize(run)["workers"] == 2


def test_stats_files_hold_their_mode_s_fields_and_read_back_through_one_class(tmp_path, monkeypatch):
    run = _run_folder(tmp_path)
    monkeypatch.setenv("RUNNER_ATTEMPT", "now")
    write(run, WorkerStats("rank0", "n1", answered=2, output_tokens=10, generate_s=1.0, local_rank=0,
                           device={"CUDA_VISIBLE_DEVICES": "0"}, record_s=0.1))
    write(run, WorkerStats("host1", "n2", answered=1, output_tokens=4, generate_s=2.0, files=["a.txt"], restarts=0))
    rank, host = (json.loads(run.stats_file(name).read_text()) for name in ("rank0", "host1"))
    assert {"local_rank", "device", "record_s"} <= set(rank) and not {"files", "restarts"} & set(rank)
    assert {"files", "restarts"} <= set(host) and not {"local_rank", "device", "record_s"} & set(host)
    assert rank["attempt"] == host["attempt"] == "now"
    run.stats_file("rank0").write_text(json.dumps({**rank, "from_a_later_runner": 1}))  # unknown keys are skipped
    summary = summarize(run)
    assert [w["name"] for w in summary["per_worker"]] == ["host1", "rank0"]
    assert (summary["answered"], summary["output_tokens"], summary["generation_tokens_per_s"]) == (3, 14, 12.0)
    assert summary["per_worker"][0]["files"] == ["a.txt"] and "from_a_later_runner" not in summary["per_worker"][1]
