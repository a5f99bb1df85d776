"""per_tile spread over its ranks, driven for real without an engine (every line is too long for the model, so it
gets its ERROR record at once and no vLLM starts): reruns of rendered outputs, inputs that change between runs,
and what a killed joiner leaves."""

import json
from pathlib import Path

from helpers.cli import run_runner
from helpers.inputs import read_jsonl

LONG = [" ".join([f"w{i}"] * 80) for i in range(6)]
NO_ENGINE = ("+engine.max_model_len=64", "sampling.max_tokens=4", "mode.on_too_long=record")


def _answered(run: Path, ranks: int) -> int:
    """The lines this launch's ranks answered."""
    return sum(json.loads((run / "stats" / f"rank{r}.json").read_text())["answered"] for r in range(ranks))


def _request(n: int) -> str:
    return json.dumps({"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": LONG[n]}]}}) + "\n"


def test_a_rendered_output_is_reopened_for_appended_lines_and_its_error_lines(tmp_path):
    """output.format=openai_batch (input=openai_batch's default) renders the joined output: its records must still
    be kept, or a rerun can neither answer the requests appended to the batch file nor retry its ERROR lines."""
    (tmp_path / "in").mkdir()
    batch, run = tmp_path / "in" / "b.jsonl", tmp_path / "run"
    batch.write_text("".join(_request(n) for n in range(3)))
    args = ["input=openai_batch", f"input.path={batch.parent}", f"hydra.run.dir={run}", *NO_ENGINE]
    assert run_runner([*args, "cluster.ranks_per_node=2"]).returncode == 0
    out = run / "out" / "b.jsonl.jsonl"
    assert [r["custom_id"] for r in read_jsonl(out)] == ["r0", "r1", "r2"]

    with open(batch, "a") as f:
        f.write(_request(3) + _request(4))
    proc = run_runner([*args, "cluster.ranks_per_node=3", "rerun=none"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["custom_id"] for r in read_jsonl(out)] == ["r0", "r1", "r2", "r3", "r4"]
    assert _answered(run, 3) == 2  # only the appended requests
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["prompts"], summary["lines"], summary["resumed"]) == (5, 5, 3)

    proc = run_runner([*args, "cluster.ranks_per_node=2"])  # rerun=errors: every ERROR line is tried again
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _answered(run, 2) == 5 and [r["custom_id"] for r in read_jsonl(out)] == [f"r{n}" for n in range(5)]
    assert all("too long" in r["error"]["error"]["message"] for r in read_jsonl(out))
    assert not list((run / "out" / "parts").iterdir())


def test_a_recursive_glob_over_a_tree_that_holds_the_run_directory_never_reads_the_runs_own_files(tmp_path):
    """Run from the data folder with input.path='**/*.jsonl' (the run directory, outputs/runs/..., lies under it):
    the run's outputs, work items and stats match the glob, and were counted as input lines, then answered as
    prompts (answers of answers) and moved away under a rank reading them."""
    data = tmp_path / "data"
    (data / "x").mkdir(parents=True)
    (data / "x" / "a.jsonl").write_text("".join(json.dumps({"q": line}) + "\n" for line in LONG[:3]))
    run = data / "outputs" / "runs" / "r"
    args = ["input=jsonl", "input.template='{q}'", f"input.path={data}/**/*.jsonl", f"hydra.run.dir={run}",
            "cluster.ranks_per_node=2", *NO_ENGINE]
    for again in range(2):
        proc = run_runner(args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["prompts"], summary["lines"], summary["answered"]) == (3, 3, 3)
        assert sorted(p.name for p in (run / "out").glob("*.jsonl")) == ["a.jsonl.jsonl"]
        assert [r["line"] for r in read_jsonl(run / "out" / "a.jsonl.jsonl")] == [1, 2, 3]
