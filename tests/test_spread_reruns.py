"""per_tile spread over its ranks, driven for real without an engine (every line is too long for the model, so it
gets its ERROR record at once and no vLLM starts): reruns of rendered outputs, inputs that change between runs,
and what a killed joiner leaves."""

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.cli import ROOT, run_runner
from helpers.inputs import read_jsonl
from helpers.processes import wait_for

LONG = [" ".join([f"w{i}"] * 80) for i in range(6)]
NO_ENGINE = ("+engine.max_model_len=64", "sampling.max_tokens=4", "mode.on_too_long=record")


def _answered(run: Path, ranks: int) -> int:
    """The lines this launch's ranks answered."""
    return sum(json.loads((run / "stats" / f"rank{r}.json").read_text())["answered"] for r in range(ranks))


def _answered_once(tmp_path: Path, *extra: str):
    """(input folder, run directory, launch arguments) after a first launch over a.txt, whose 3 lines are too long
    for the model (each an ERROR record, no engine started)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("".join(f"{line}\n" for line in LONG[:3]))
    run = tmp_path / "run"
    args = [f"input.path={folder}", f"hydra.run.dir={run}", "cluster.ranks_per_node=2", *extra, *NO_ENGINE]
    assert run_runner(args).returncode == 0
    return folder, run, args


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


def _hidden(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_joiner_killed_mid_join_leaves_no_temp_output_behind_after_the_next_launch(tmp_path):
    """`python -m runner.summary` (or the job's summary step) SIGKILLed while it writes out/<input>.jsonl leaves
    its hidden temp file, as big as the output, in out/: the next launch (which holds the run) removes it, and
    the ranks' own temp files in out/parts/, and joins the file whole."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("".join(f"{line}\n" for line in LONG[:3]))
    run = tmp_path / "run"
    args = [f"input.path={tmp_path / 'in'}", f"hydra.run.dir={run}", "cluster.ranks_per_node=2", "rerun=none",
            *NO_ENGINE]
    assert run_runner(args).returncode == 0
    out, parts = run / "out" / "a.txt.jsonl", run / "out" / "parts"
    whole = out.read_bytes()
    # the ranks finished, the summary step has not run yet: the file's one work item waits to be joined; a FIFO
    # holds the joiner inside the join (its temp output open) until it is killed
    part = parts / "a.txt.1-4.jsonl"
    out.unlink()
    os.mkfifo(part)
    (parts / ".a.txt.1-4.jsonl.node7.4242.4242.tmp").write_bytes(whole[:10])  # a rank killed mid-finalize
    joiner = subprocess.Popen([sys.executable, "-m", "runner.summary", str(run / "job.yaml")], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(name.endswith(".tmp") for name in _hidden(run / "out")), 60)
    finally:
        joiner.kill()
        joiner.wait()
    part.unlink()
    part.write_bytes(whole)
    assert run_runner(args).returncode == 0
    assert read_jsonl(out) == [json.loads(line) for line in whole.splitlines()], (out.read_bytes(), whole)
    assert not list(parts.iterdir())
    assert _hidden(run / "out") == [] and _hidden(run / "stats") == []


def test_the_script_a_dry_run_writes_run_by_hand_joins_its_outputs(tmp_path):
    """dry_run=true writes job.sh (job.pbs: then `qsub job.pbs` by hand) and work.json; out/ must match the
    work.json it wrote (the sidecars the join needs, reopened outputs, ERROR items to answer again), else the
    job's ranks answer every line and its summary says all done, but no output is ever joined."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("".join(f"{line}\n" for line in LONG[:3]))
    run = tmp_path / "run"
    args = [f"input.path={tmp_path / 'in'}", f"hydra.run.dir={run}", "cluster.ranks_per_node=2", *NO_ENGINE]
    out = run / "out" / "a.txt.jsonl"
    for again in range(2):  # fresh, then a rerun: its ERROR lines are answered again
        assert run_runner([*args, "dry_run=true"]).returncode == 0
        assert subprocess.run(["bash", str(run / "job.sh")], cwd=ROOT).returncode == 0
        assert [r["line"] for r in read_jsonl(out)] == [1, 2, 3] and not list((run / "out" / "parts").iterdir())
        assert _answered(run, 2) == 3


def test_output_parquet_set_after_a_file_was_joined_writes_its_copy_on_the_next_launch(tmp_path):
    """The README's promise (a missing Parquet copy is written on the next launch) held for server_per_node and
    by_rank only: a joined file with nothing to do was skipped before its copy was looked for."""
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("".join(f"{line}\n" for line in LONG[:3]))
    run = tmp_path / "run"
    args = [f"input.path={tmp_path / 'in'}", f"hydra.run.dir={run}", "cluster.ranks_per_node=2", "rerun=none",
            *NO_ENGINE]
    assert run_runner(args).returncode == 0
    proc = run_runner([*args, "output.parquet=true"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_table(run / "out" / "a.txt.parquet").to_pylist() == read_jsonl(run / "out" / "a.txt.jsonl")
    assert _answered(run, 2) == 0


def test_the_summary_and_progress_read_no_finished_input_again(tmp_path):
    """At the end of a job its summary step counted every input's lines by reading every input whole (on 2048
    nodes held by the job: hours for a few hundred GB); a finished file whose input has its size and mtime as
    answered counts its records instead, as the launch trusts them. Shown by an input whose bytes changed under
    the same size and mtime: it is not read."""
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "a.txt"
    path.write_text("".join(f"{line}\n" for line in LONG[:3]))
    run = tmp_path / "run"
    assert run_runner([f"input.path={path.parent}", f"hydra.run.dir={run}", "cluster.ranks_per_node=2",
                       *NO_ENGINE]).returncode == 0
    stat = path.stat()
    path.write_bytes(b"\n" * stat.st_size)  # read, it would have no line
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    summary = subprocess.run([sys.executable, "-m", "runner.summary", str(run / "job.yaml")], cwd=ROOT,
                             capture_output=True, text=True)
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert (json.loads((run / "summary.json").read_text())["lines"]) == 3
    progress = subprocess.run([sys.executable, "-m", "runner.progress", str(run)], cwd=ROOT, capture_output=True,
                              text=True)
    assert progress.returncode == 0 and "1 of 1 files finished, 3/3 lines done" in progress.stdout


def test_an_input_whose_name_holds_a_newline_is_joined(tmp_path):
    """A file name may hold any byte but / and NUL: one with a newline had work items the listing of out/parts/
    did not see, so it was never joined and every launch answered it again from the start."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "odd\nname 'x'.txt").write_text("".join(f"{line}\n" for line in LONG[:3]))
    run = tmp_path / "run"
    args = [f"input.path={tmp_path / 'in'}", f"hydra.run.dir={run}", "cluster.ranks_per_node=2", "rerun=none",
            *NO_ENGINE]
    for answered in (3, 0):
        proc = run_runner(args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert [r["line"] for r in read_jsonl(run / "out" / "odd\nname 'x'.txt.jsonl")] == [1, 2, 3]
        assert _answered(run, 2) == answered and not list((run / "out" / "parts").iterdir())


def test_a_rerun_reads_no_finished_input_at_launch(tmp_path):
    """Finished inputs with nothing to do are not read at launch: a rerun after adding one file to a folder of
    answered ones opens only the new one (the launch process's opens of the input folder, counted by an audit
    hook). Shown also by a finished input whose bytes changed under the same size and mtime: read, its lines
    would be other prompts."""
    from test_launch_reads import _COUNTING

    folder, run, args = _answered_once(tmp_path, "rerun=none")
    path = folder / "a.txt"
    stat = path.stat()
    path.write_bytes(b"x" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (folder / "b.txt").write_text(LONG[3] + "\n")  # a file added: this launch has work
    counted = tmp_path / "opens.json"
    proc = subprocess.run([sys.executable, "-c", _COUNTING, str(folder), str(counted), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    opens = json.loads(counted.read_text())
    assert opens.get("a.txt", 0) == 0 and opens.get("b.txt", 0) >= 1, opens
    assert [r["line"] for r in read_jsonl(run / "out" / "b.txt.jsonl")] == [1]
    assert len(read_jsonl(run / "out" / "a.txt.jsonl")) == 3


def test_a_finished_input_of_another_epoch_is_read_at_launch(tmp_path):
    """A rerun=all launch cancelled after it wrote job.yaml (its new epoch) and before it answered anything: the
    outputs still carry the old epoch, so the next launch answers them again and must read (validate, count)
    them, not leave them out as finished: its lines too long for the model are refused under
    mode.on_too_long=error, as in any launch that answers them."""
    from omegaconf import OmegaConf

    folder, run, args = _answered_once(tmp_path, "rerun=none")
    job = OmegaConf.load(run / "job.yaml")
    job.rerun_epoch = "a-cancelled-rerun-all"
    OmegaConf.save(job, run / "job.yaml")
    proc = run_runner([*args, "mode.on_too_long=error"])
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])


def test_rerun_changed_answers_error_lines_again_as_rerun_errors_does(tmp_path):
    """rerun=changed does what rerun=errors does (and answers a changed input again): its ERROR records are
    answered again. They were kept as final, with no word of it."""
    folder, run, args = _answered_once(tmp_path)  # every line too long: 3 ERROR records
    proc = run_runner([*args, "rerun=changed"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _answered(run, 2) == 3 and len(read_jsonl(run / "out" / "a.txt.jsonl")) == 3
    proc = run_runner([*args, "rerun=none"])
    assert proc.returncode == 0 and _answered(run, 2) == 0


def test_a_spoiled_sidecar_is_one_line_naming_it_not_a_traceback(tmp_path):
    """A sidecar spoiled by hand or by a broken disk (it is written atomically): the launch stops with exit 2 and
    one line naming the file and the way out; nothing is answered again."""
    folder, run, args = _answered_once(tmp_path, "rerun=none")
    sidecar = run / "out" / "a.txt.fp.json"
    sidecar.write_text("{spoiled")
    proc = run_runner(args)
    assert proc.returncode == 2 and str(sidecar) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(read_jsonl(run / "out" / "a.txt.jsonl")) == 3
