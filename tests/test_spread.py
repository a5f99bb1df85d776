"""per_tile spread over its ranks (mode.assign=spread, the default): the work items, the plan, and real runs in
which ranks are killed and the job is rerun with another number of ranks."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import ROOT, run_runner
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, tagged_env, wait_for
from runner.prompt_tokens import PromptCounter
from runner.inputs import iter_lines
from runner.work_items import deal, gaps_of, index_file

QUESTIONS = [f"Name {n} things that are {color}." for n in range(1, 9) for color in ("red", "blue", "green", "big")]


def _answered(shares):
    """(path, line number, text) of every line the shares' work items hold, read as a rank reads them."""
    return [(p.path, line.number, line.text) for share in shares for p in share
            for line in iter_lines(Path(p.path), p.start, p.stop, p.offset)]


def _expected(paths):
    return [(str(p), n, t) for p in paths for n, t in enumerate(p.read_text().splitlines(), 1) if t.strip()]


def test_three_files_over_48_ranks_and_one_file_over_12_keep_every_rank_busy(tmp_path):
    files = {"a.txt": [f"a{i}" for i in range(500)], "b.txt": ["b", "", "b2"] * 300,
             "c.txt": [f"c{i}" if i % 5 else "" for i in range(3000)]}
    paths = [write_inputs(tmp_path, files) / name for name in files]
    (tmp_path / "c.txt").write_text((tmp_path / "c.txt").read_text().rstrip("\n"))  # no final newline
    for chosen, ranks in ((paths, 48), (paths[2:], 12)):
        indexes = [index_file(p) for p in chosen]
        shares = deal([], [gap for index in indexes for gap in gaps_of(index, [])], [1.0] * ranks)
        got = _answered(shares)
        assert sorted(got) == sorted(_expected(chosen)) and len(got) == len(set(got))  # every line once
        loads = [sum(p.lines for p in share) for share in shares]
        assert max(loads) - min(loads) <= 1 and min(loads) > 0  # every rank busy, balanced to a line
        assert all(len(share) <= 1 + len(chosen) for share in shares)
        assert [len(_answered([[p]])) for share in shares for p in share] == [p.lines for s in shares for p in s]


def test_a_bigger_engine_gets_a_bigger_share_and_kept_ranges_stay_whole(tmp_path):
    path = write_inputs(tmp_path, {"x.txt": [f"q{i}" for i in range(120)]}) / "x.txt"
    index = index_file(path)
    from runner.work_items import piece_of

    kept = piece_of(index, 31, 41)  # a range a killed rank had begun: its ledger is keyed by its bounds
    shares = deal([kept], gaps_of(index, [(31, 41)]), [8.0, 4.0])
    assert kept in shares[0] + shares[1]
    assert [sum(p.lines for p in share) for share in shares] == [80, 40]
    assert sorted(_answered(shares)) == sorted(_expected([path]))


def test_plan_starts_nothing_makes_no_run_directory_and_counts_right(tmp_path, tag):
    lines = ["Say yes.", "", "What is two plus two?", "word " * 300, "Name a fruit."]
    inputs, run = write_inputs(tmp_path / "in", {"a.txt": lines, "b.txt": ["Say no."] * 6}), tmp_path / "run"
    proc = run_runner([f"input.path={inputs}", f"hydra.run.dir={run}", "plan=true", "plan_tokens_per_s=10",
                       "cluster.ranks_per_node=4", "sampling.max_tokens=100", "+engine.max_model_len=200",
                       "mode.on_too_long=record"],
                      env=tagged_env(tag), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not run.exists() and run_processes(tag) == {}
    model = Path.home() / ".cache/runner/models/SmolLM2-135M-Instruct"
    counter = PromptCounter(str(model), chat=True)
    tokens = [counter.exact(t) for t in lines + ["Say no."] * 6 if t]
    out = proc.stdout
    assert f"lines: 10; prompt tokens: {sum(tokens)} (longest prompt {max(tokens)} tokens, a.txt:4)" in out
    assert "lines over the context: 1 (prompt + sampling.max_tokens=100 > max_model_len=200)" in out
    assert "5 work items over 4 ranks: 2-3 lines per rank, 1-2 items per rank" in out
    assert "rank 0: 2 lines (a.txt:1-3)\n    rank 1: 3 lines (a.txt:4-5, b.txt:1-1)\n" in out
    assert "rank 3: 2 lines (b.txt:5-6)" in out
    assert "at most 1000 (10 lines to answer)" in out and "about 1m40s of generation at 10 output tokens/s" in out


# real runs ---------------------------------------------------------------------------------------------------

def _start(args, tag, err: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(err, "wb"), env={**os.environ, **tagged_env(tag)})


def _records(path: Path) -> list:
    """The whole records of a ledger (a torn last line is left out, as the next run cuts it)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def _ledgers(run: Path) -> dict:
    return {p.name: _records(p) for p in sorted((run / "out" / "parts").glob("*.log.jsonl"))}


def _per_rank(run: Path) -> dict:
    """rank -> (lines with a record in its work items, whether one of them is still a ledger), from work.json."""
    try:
        work = json.loads((run / "work.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    found = {}
    for rank, share in enumerate(work["shares"]):
        done, open_ = 0, False
        for k, start, stop, _, _ in share:
            path = work["files"][k]
            ledger = run / "out" / "parts" / f"{Path(path).name}.{start}-{stop}.log.jsonl"
            finished = [run / "out" / "parts" / f"{Path(path).name}.{start}-{stop}{s}.jsonl" for s in ("", ".errors")]
            done += len(_records(ledger)) + sum(len(_records(f)) for f in finished)
            open_ = open_ or ledger.exists() or not any(f.exists() for f in finished)
        found[rank] = (done, open_)
    return found


def _all_answered(run: Path, ranks: int, process) -> bool:
    counts = _per_rank(run)
    return process.poll() is not None or (len(counts) == ranks and all(done for done, _ in counts.values()))


def _rank_pid(tag: str, rank: int) -> int:
    for pid, argv in run_processes(tag).items():
        if "runner.worker" in argv and f"RUNNER_RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
            return pid
    return 0


def _every_line_once(run: Path, files: dict) -> None:
    for name, lines in files.items():
        records = read_jsonl(run / "out" / f"{name}.jsonl")
        assert [(r["file"], r["line"], r["prompt"]) for r in records] == [
            (name, n, t) for n, t in enumerate(lines, 1) if t]
        assert all(r["status"] == "SUCCESS" for r in records)
    assert not list((run / "out" / "parts").glob("*"))  # joined: no work item left behind


ARGS = ("mode.max_in_flight=2", "sampling.max_tokens=16", "mode.progress_every_s=1")


@pytest.mark.engine
def test_three_files_over_four_ranks_one_rank_killed_then_three_ranks_finish(tmp_path, tag):
    files = {"a.txt": QUESTIONS[:10], "b.txt": [QUESTIONS[10], "", *QUESTIONS[11:22]], "c.txt": QUESTIONS[22:32]}
    inputs, run = write_inputs(tmp_path / "in", files), tmp_path / "run"
    args = [f"input.path={inputs}", f"hydra.run.dir={run}", *ARGS]
    first = _start([*args, "cluster.ranks_per_node=4"], tag, tmp_path / "first.err")
    try:
        # every rank has answered a line; one with lines left is killed there
        assert wait_for(lambda: _all_answered(run, 4, first), 600) and first.poll() is None
        victim = next(rank for rank, (_, open_) in _per_rank(run).items() if open_)
        os.kill(_rank_pid(tag, victim), signal.SIGKILL)
        assert first.wait(timeout=600) != 0  # the launch says a rank failed
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert wait_for(lambda: not run_processes(tag), 30), run_processes(tag)
    survivors = {r: json.loads((run / "stats" / f"rank{r}.json").read_text())["answered"] for r in range(4)
                 if r != victim}
    killed_answered = _per_rank(run)[victim][0]
    assert all(survivors.values()) and 0 < killed_answered and _ledgers(run)  # every rank answered lines

    proc = run_runner([*args, "cluster.ranks_per_node=3"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    _every_line_once(run, files)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["prompts"], summary["lines"]) == (32, 32)
    # no line was answered twice: this run answered exactly what the first left
    assert summary["answered"] == 32 - sum(survivors.values()) - killed_answered


@pytest.mark.engine
def test_one_file_over_four_ranks_whole_job_killed_then_two_ranks_finish(tmp_path, tag):
    files = {"big.txt": QUESTIONS}
    inputs, run = write_inputs(tmp_path / "in", files), tmp_path / "run"
    args = [f"input.path={inputs}", f"hydra.run.dir={run}", *ARGS]
    first = _start([*args, "cluster.ranks_per_node=4"], tag, tmp_path / "first.err")
    try:
        assert wait_for(lambda: _all_answered(run, 4, first), 600) and first.poll() is None
    finally:
        os.kill(first.pid, signal.SIGKILL)  # the launch: every rank dies with it
        first.wait()
    assert wait_for(lambda: not run_processes(tag), 30), f"ranks outlived their launch: {run_processes(tag)}"
    before = _ledgers(run)
    done = sum(done for done, _ in _per_rank(run).values())
    assert all(done for done, _ in _per_rank(run).values()) and 0 < done < 32 and before  # every rank answered

    original = (inputs / "big.txt").read_text()
    (inputs / "big.txt").write_text("Edited.\n" + original.split("\n", 1)[1])
    refused = run_runner([*args, "cluster.ranks_per_node=2"])
    assert refused.returncode == 2 and "big.txt changed at or before line 1" in refused.stderr
    assert "Traceback" not in refused.stderr and _ledgers(run) == before
    (inputs / "big.txt").write_text(original)

    proc = run_runner([*args, "cluster.ranks_per_node=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    _every_line_once(run, files)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["answered"] == 32 - done and summary["prompts"] == 32
    assert summary["workers"] == 2


def test_ranges_resume_rejoin_and_a_killed_joiner_without_an_engine(tmp_path):
    """Lines too long for the model get their ERROR record at once (no engine starts), which drives the whole
    run-directory side for real: ranges over 3 ranks joined; lines appended and spread over 2 ranks while the
    joined output is kept (rerun=none); a joiner killed after its rename; ERROR lines answered again."""
    long = [" ".join([word] * 80) for word in ("alpha", "beta", "gamma", "delta", "epsilon")]
    inputs, run = write_inputs(tmp_path / "in", {"long.txt": long[:3]}), tmp_path / "run"
    args = [f"input.path={inputs}", f"hydra.run.dir={run}", "+engine.max_model_len=64", "sampling.max_tokens=4",
            "mode.on_too_long=record"]
    assert run_runner([*args, "cluster.ranks_per_node=3"]).returncode == 0
    out = run / "out" / "long.txt.jsonl"
    first = out.read_bytes()
    assert [(r["line"], r["status"]) for r in read_jsonl(out)] == [(1, "ERROR"), (2, "ERROR"), (3, "ERROR")]
    assert [json.loads((run / "stats" / f"rank{r}.json").read_text())["answered"] for r in range(3)] == [1, 1, 1]

    (inputs / "long.txt").write_text("".join(f"{line}\n" for line in long))  # 2 lines appended
    proc = run_runner([*args, "cluster.ranks_per_node=2", "rerun=none"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes().startswith(first) and [r["line"] for r in read_jsonl(out)] == [1, 2, 3, 4, 5]
    assert [json.loads((run / "stats" / f"rank{r}.json").read_text())["answered"] for r in range(2)] == [1, 1]

    (run / "out" / "parts").mkdir(exist_ok=True)
    (run / "out" / "parts" / "long.txt.4-5.jsonl").write_bytes(out.read_bytes().splitlines(True)[3])  # left over
    whole = out.read_bytes()
    assert run_runner([*args, "cluster.ranks_per_node=2", "rerun=none"]).returncode == 0
    assert out.read_bytes() == whole and not list((run / "out" / "parts").iterdir())

    proc = run_runner([*args, "cluster.ranks_per_node=2"])  # rerun=errors: the 5 ERROR lines are tried again
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["answered"], summary["prompts"], summary["error_lines"]) == (5, 5, 5)
    assert [r["line"] for r in read_jsonl(out)] == [1, 2, 3, 4, 5]


def test_parquet_rows_are_spread_as_row_ranges_and_rejoined_once_without_an_engine(tmp_path):
    """Parquet has no lines: its rows are cut into row ranges (the reader finds them from the row groups), and a
    reopened output (its ERROR records answered again) is the range of the rows it holds, whatever its bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    rows = [" ".join([f"w{i}"] * 80) for i in range(7)]
    pq.write_table(pa.table({"prompt": rows}), tmp_path / "in" / "t.parquet", row_group_size=3)
    run = tmp_path / "run"
    args = ["input=parquet", f"input.path={tmp_path / 'in'}", f"hydra.run.dir={run}", "+engine.max_model_len=64",
            "sampling.max_tokens=4", "mode.on_too_long=record"]
    for ranks in (3, 2):
        proc = run_runner([*args, f"cluster.ranks_per_node={ranks}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = read_jsonl(run / "out" / "t.parquet.jsonl")
        assert [(r["line"], r["prompt"]) for r in records] == list(enumerate(rows, 1))
    # the reopened output is one kept range (its ledger is keyed by it): one rank answers its 7 rows again
    assert [json.loads((run / "stats" / f"rank{r}.json").read_text())["answered"] for r in range(2)] == [7, 0]
