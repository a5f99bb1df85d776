"""per_tile when its engine dies or hangs under a line: real SmolLM2 on CPU, the engine core killed or stopped at
the process boundary by a test-only sitecustomize (tests/helpers/poison) when a request holds its marker."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import ROOT
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, tagged_env, wait_for

POISON = Path(__file__).resolve().parent / "helpers" / "poison"


def _run(args, tag, err: Path, timeout: float) -> int:
    env = {**os.environ, **tagged_env(tag), "PYTHONPATH": str(POISON)}
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(err, "wb"), env=env)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1  # hung: the finally takes it down
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in run_processes(tag):  # a stopped engine core left behind by the run (its own session)
            os.kill(pid, signal.SIGKILL)


@pytest.mark.engine
def test_a_line_that_kills_the_engine_and_one_that_hangs_it_get_an_error_record_and_every_other_line_once(
        tmp_path, tag):
    """The engine core in a process of its own (as on GPU clusters), two ranks. Before: a killed engine core left
    the rank blocked in vLLM's step for good (its output thread ends without a word) and a stopped one hung it to
    the walltime; a rerun met the same line and died again, so the lines after it never finished. Now each rank
    builds its engine again and answers the lines in flight at the death in halves, each half alone."""
    lines = ["Say yes.", "Say no.", "POISON-PILL say maybe.", "Name a fruit.", "HANG-PILL name a colour.",
             "Name a tree.", "Name a bird."]
    inputs, run = write_inputs(tmp_path / "in", {"a.txt": lines}), tmp_path / "run"
    args = [f"input.path={inputs}", f"hydra.run.dir={run}", "mode.max_in_flight=2", "sampling.max_tokens=8",
            "mode.stall_s=10", "mode.progress_every_s=1", "cluster.env.VLLM_ENABLE_V1_MULTIPROCESSING=1"]
    code = _run(args, tag, tmp_path / "run.err", timeout=420)
    tail = (tmp_path / "run.err").read_text(errors="replace")[-3000:]
    assert code == 0, tail
    assert wait_for(lambda: not run_processes(tag), 30), run_processes(tag)  # the stopped core was not orphaned
    records = read_jsonl(run / "out" / "a.txt.jsonl")
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 6, 7]  # every line once
    status = {r["line"]: r["status"] for r in records}
    assert status == {1: "SUCCESS", 2: "SUCCESS", 3: "ERROR", 4: "SUCCESS", 5: "ERROR", 6: "SUCCESS", 7: "SUCCESS"}
    assert "died" in records[2]["error"] and "hung" in records[4]["error"], (records[2], records[4])
    assert records[2]["output_tokens"] == 0 and records[4]["output_tokens"] == 0
    # one rank had the poison line, the other the hanging one; each built its engine again, its lines kept
    stats = [json.loads((run / "stats" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sum(s["answered"] for s in stats) == 7 and [s["errors"] for s in stats] == [1, 1]
    assert all(1 <= s["restarts"] <= 2 for s in stats), stats  # once under the pair in flight, once alone
    assert json.loads((run / "summary.json").read_text())["answered"] == 7


def _lines_with_records(run: Path) -> dict:
    """line -> statuses of its records in the work items' ledgers and outputs (a line twice shows twice)."""
    found: dict = {}
    for path in sorted((run / "out" / "parts").glob("*.jsonl")):
        for record in read_jsonl(path):
            found.setdefault(record["line"], []).append(record["status"])
    return found


@pytest.mark.engine
def test_a_line_that_kills_the_rank_itself_ends_as_an_error_record_by_the_third_rerun_never_a_loop(tmp_path, tag):
    """The engine core in the rank's own process (local_cpu): the poison line takes the rank with it, so no
    in-run restart can save the lines in flight. Before: every rerun put the line in flight again with others
    and died, for good. Now the in-flight journal beside the ledger names the suspects: the next run answers them
    as a group alone, the one after one by one, and one the rank died under alone gets an ERROR record."""
    lines = ["Say yes.", "Say no.", "POISON-PILL say maybe.", "Name a fruit.", "Name a tree."]
    inputs, run = write_inputs(tmp_path / "in", {"a.txt": lines}), tmp_path / "run"
    args = [f"input.path={inputs}", f"hydra.run.dir={run}", "mode.max_in_flight=2", "sampling.max_tokens=8",
            "cluster.ranks_per_node=1"]
    codes, seen = [], []
    for attempt in range(4):
        codes.append(_run(args, tag, tmp_path / f"run{attempt}.err", timeout=300))
        assert wait_for(lambda: not run_processes(tag), 30), run_processes(tag)
        seen.append(_lines_with_records(run))
        if codes[-1] == 0:
            break
    assert codes == [2, 2, 2, 0], (codes, (tmp_path / f"run{len(codes) - 1}.err").read_text()[-3000:])
    assert set(seen[0]) <= set(seen[1]) <= set(seen[2]) and 3 not in seen[2]  # the deaths lost no record
    assert all(len(statuses) == 1 for statuses in seen[2].values())
    records = read_jsonl(run / "out" / "a.txt.jsonl")
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]  # every line once
    assert [r["status"] for r in records] == ["SUCCESS", "SUCCESS", "ERROR", "SUCCESS", "SUCCESS"]
    assert "rank died" in records[2]["error"] and records[2]["output_tokens"] == 0
    assert not list((run / "out" / "parts").iterdir())  # joined: no ledger nor journal left
    # the last run answered only what the deaths had left (no line asked of the engine twice over the outputs)
    assert json.loads((run / "stats" / "rank0.json").read_text())["answered"] == 5 - len(seen[2])


def test_the_journal_survives_a_torn_entry_and_names_each_suspect_at_its_last_level(tmp_path):
    """No engine: the journal a rank killed mid-append leaves, read and appended to by the next run."""
    from runner.inflight import ALONE, GROUP, MIXED, Journal

    journal = Journal(tmp_path / "a.txt.1-100.inflight")
    journal.append([1, 2, 3, 5, 6], MIXED)
    journal.append([5, 6], GROUP)
    journal._file.write(b'{"lines": [[7, 9]], "al')  # the rank killed mid-append
    journal._file.flush()
    answered = {1, 2}.__contains__
    assert Journal(journal.path).died(answered) == {3: MIXED, 5: GROUP, 6: GROUP}
    again = Journal(journal.path)  # the next run appends after the torn entry, on a line of its own
    again.append([6], ALONE)
    assert Journal(journal.path).died(answered) == {3: MIXED, 5: GROUP, 6: ALONE}
    assert len(journal.path.read_bytes().splitlines()) == 4  # one append per top-up, the lines as runs
    again.remove()
    assert not journal.path.exists()


def test_a_line_with_an_error_record_that_a_rank_died_under_is_a_suspect_again_on_a_rerun_of_errors(tmp_path):
    """No engine: the line a rank died under alone has its ERROR record; rerun=errors answers it again, and the
    rank dies with it once more. Before, the journal read that line as answered (it has a record), so the next
    run put it back into a full top-up, died, and so on for every rerun: a loop."""
    from helpers.compose import compose_config
    from runner.inflight import MIXED, Journal
    from runner.readers import reader_of
    from runner.record_log import RecordLog
    from runner.records import Record
    from runner.spread_rank import WorkItem, _suspects
    from runner.tally import Tally
    from runner.work_items import Piece

    path = tmp_path / "a.txt"
    path.write_text("one\ntwo\nthree\nfour\n")
    ledger = RecordLog(tmp_path / "a.txt.1-5.log.jsonl")
    ledger.append([Record({"file": "a.txt", "line": n}, "x", "y").to_json() for n in (1, 2, 4)])
    ledger.append([Record.failed({"file": "a.txt", "line": 3}, "three", "the rank died").to_json()])
    journal = Journal(tmp_path / "a.txt.1-5.inflight")
    journal.append([3], MIXED)  # the rerun of errors put it in flight and died with it
    item = WorkItem(Piece(str(path), 1, 5, 0, 4), ledger, journal=journal)
    reader = reader_of(compose_config(f"input.path={path}"))
    for retry, suspects in ((True, [[3]]), (False, [])):
        owner: dict = {}
        groups = _suspects([item], reader, owner, Tally(), retry)
        assert [[entry.number for entry in group] for group in groups] == suspects
    ledger.close()


@pytest.mark.engine
def test_a_rank_killed_mid_run_leaves_no_engine_core_and_the_rerun_answers_every_line_once(tmp_path, tag):
    """The engine core in a process of its own. Before: kill -9 of the rank left its EngineCore (and its worker)
    running for good, waiting on the dead rank's socket with the device's memory held."""
    lines = [f"Name {n} animals." for n in range(1, 41)]
    inputs, run = write_inputs(tmp_path / "in", {"a.txt": lines}), tmp_path / "run"
    args = [f"input.path={inputs}", f"hydra.run.dir={run}", "mode.max_in_flight=4", "sampling.max_tokens=16",
            "cluster.ranks_per_node=1", "cluster.env.VLLM_ENABLE_V1_MULTIPROCESSING=1"]
    env = {**os.environ, **tagged_env(tag)}
    first = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=open(tmp_path / "first.err", "wb"), env=env)
    try:
        assert wait_for(lambda: _lines_with_records(run), 300), (tmp_path / "first.err").read_text()[-2000:]
        rank = next(pid for pid, argv in run_processes(tag).items() if "runner.worker" in argv)
        os.kill(rank, signal.SIGKILL)
        assert first.wait(timeout=120) == 2
        assert wait_for(lambda: not run_processes(tag), 30), run_processes(tag)  # no orphaned engine core
        # its engine core had a process of its own: the rank's death is no line's fault, so nothing was journaled
        # (a rerun after a preemption answers its lines as ordinary work, not one by one)
        assert not list((run / "out" / "parts").glob("*.inflight"))
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        for pid in run_processes(tag):
            os.kill(pid, signal.SIGKILL)
    before = _lines_with_records(run)
    assert 0 < len(before) < 40
    assert _run(args, tag, tmp_path / "rerun.err", timeout=300) == 0
    records = read_jsonl(run / "out" / "a.txt.jsonl")
    assert [r["line"] for r in records] == list(range(1, 41)) and {r["status"] for r in records} == {"SUCCESS"}
    assert json.loads((run / "stats" / "rank0.json").read_text())["answered"] == 40 - len(before)  # none twice
