"""A relaunch of a run directory whose files were spoiled, removed or renamed between launches (real runner
processes on real files, no engine: every line is too long for the model, so it gets its ERROR record at once).
Each line must be answered exactly once, no answered line lost, and a run that cannot go on stops in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import ROOT, run_runner
from helpers.inputs import read_jsonl
from test_spread_reruns import LONG, _answered, _answered_once


def _spoil(job: Path, how: str) -> None:
    text = job.read_text()
    spoiled = {
        # a write cut short before its last keys (the runner wrote job.yaml in place): still YAML, a mapping
        "cut_before_epoch": text[: text.index("rerun_epoch:")],
        "cut_mid_value": text[: text.index("model:")] + 'model:\n  path: "/roo',  # torn inside a quoted path
        "empty": "",
        "binary": "\x00\x9f\xfe garbage \x01",
        "a_list": "- model\n- mode\n",
    }[how]
    job.write_bytes(spoiled.encode("utf-8", "surrogateescape") if how != "binary" else b"\x00\x9f\xfe garbage \x01")


@pytest.mark.parametrize("how", ["cut_before_epoch", "cut_mid_value", "empty", "binary", "a_list"])
def test_a_spoiled_job_yaml_is_one_line_and_answers_nothing_again(tmp_path, how):
    """job.yaml cut short, emptied, binary or a YAML list: the relaunch stops in one line naming the file and
    the way out (exit 2, no traceback), its outputs untouched; cut before `rerun_epoch` it answered every line
    again and overwrote the outputs. rerun=all, the way out it names, answers them again."""
    folder, run, args = _answered_once(tmp_path, "rerun=none")
    out = run / "out" / "a.txt.jsonl"
    before, stats = out.read_bytes(), (run / "stats" / "rank0.json").read_bytes()
    _spoil(run / "job.yaml", how)
    proc = run_runner(args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert str(run / "job.yaml") in proc.stderr and "rerun=all" in proc.stderr
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr, proc.stderr[-3000:]
    assert out.read_bytes() == before and (run / "stats" / "rank0.json").read_bytes() == stats
    summary = subprocess.run([sys.executable, "-m", "runner.summary", str(run / "job.yaml")], cwd=ROOT,
                             capture_output=True, text=True)
    # (cut before rerun_epoch, job.yaml still says how to join and count: the summary needs no epoch)
    assert summary.returncode == (0 if how == "cut_before_epoch" else 2), summary.stderr[-3000:]
    assert "Traceback" not in summary.stderr and out.read_bytes() == before
    proc = run_runner([*args, "rerun=all"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["line"] for r in read_jsonl(out)] == [1, 2, 3] and _answered(run, 2) == 3


def test_a_removed_sidecar_adopts_the_joined_output_and_answers_only_what_it_lacks(tmp_path):
    """out/a.txt.fp.json removed (rerun=none): the joined output is adopted as it is. It was answered again in
    full (the launch planned the file as if nothing was answered) and the summary then counted no ERROR line.
    A line appended since is answered, once."""
    folder, run, args = _answered_once(tmp_path, "rerun=none")
    out = run / "out" / "a.txt.jsonl"
    before = out.read_bytes()
    (run / "out" / "a.txt.fp.json").unlink()
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == before and _answered(run, 2) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["prompts"], summary["lines"], summary["error_lines"]) == (3, 3, 3)
    with open(folder / "a.txt", "a") as f:
        f.write(LONG[3] + "\n")
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["line"] for r in read_jsonl(out)] == [1, 2, 3, 4] and _answered(run, 2) == 1


def _answered_not_joined(tmp_path: Path):
    """(input folder, run directory, launch arguments, the joined bytes) after a launch whose ranks finished a.txt
    and b.txt but whose join has not run yet (a Slurm job without launcher.wait, a job killed in its summary step):
    their answers are in out/parts/ only."""
    folder, run, args = _answered_once(tmp_path, "rerun=none")
    (folder / "b.txt").write_text(LONG[4] + "\n")
    assert run_runner(args).returncode == 0
    whole = {}
    for name in ("a.txt", "b.txt"):
        out = run / "out" / f"{name}.jsonl"
        whole[name] = out.read_bytes()
        out.unlink()
        stop = len(whole[name].splitlines()) + 1
        (run / "out" / "parts" / f"{name}.1-{stop}.jsonl").write_bytes(whole[name])
    return folder, run, args, whole


def test_an_input_removed_before_the_join_is_still_joined_and_not_answered_again(tmp_path):
    """per_tile spread: a.txt removed after its ranks answered it and before the join (the summary, or the next
    launch): its answers stayed in out/parts/, which nothing read again. They are joined into out/a.txt.jsonl;
    the input brought back is not answered again."""
    folder, run, args, whole = _answered_not_joined(tmp_path)
    os.rename(folder / "a.txt", tmp_path / "a.txt.away")
    summary = subprocess.run([sys.executable, "-m", "runner.summary", str(run / "job.yaml")], cwd=ROOT,
                             capture_output=True, text=True)
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert (run / "out" / "a.txt.jsonl").read_bytes() == whole["a.txt"]
    assert (run / "out" / "b.txt.jsonl").read_bytes() == whole["b.txt"]
    assert not list((run / "out" / "parts").iterdir())
    os.rename(tmp_path / "a.txt.away", folder / "a.txt")
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _answered(run, 2) == 0 and (run / "out" / "a.txt.jsonl").read_bytes() == whole["a.txt"]


def test_an_input_removed_before_the_next_launch_joins_is_joined_by_it(tmp_path):
    """As above, the next launch being the joiner (the input gone from input.path when it lists the inputs)."""
    folder, run, args, whole = _answered_not_joined(tmp_path)
    (folder / "a.txt").unlink()
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "out" / "a.txt.jsonl").read_bytes() == whole["a.txt"]
    assert not list((run / "out" / "parts").iterdir()) and _answered(run, 2) == 0


def test_an_input_renamed_with_the_same_bytes_is_adopted_not_answered_again(tmp_path):
    """a.txt renamed b.txt between launches: b.txt was answered again in full while out/a.txt.jsonl stayed (every
    line twice over the outputs). The same bytes (size and blake2b as answered, one listing of out/ by the launch)
    take over a.txt's answers, their records naming b.txt; an output left without its input is told in one line
    and kept."""
    folder, run, args = _answered_once(tmp_path, "rerun=none")
    old = read_jsonl(run / "out" / "a.txt.jsonl")
    os.rename(folder / "a.txt", folder / "b.txt")
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _answered(run, 2) == 0 and not (run / "out" / "a.txt.jsonl").exists()
    assert read_jsonl(run / "out" / "b.txt.jsonl") == [{**r, "file": "b.txt"} for r in old]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["prompts"], summary["lines"], summary["error_lines"]) == (3, 3, 3)

    (folder / "b.txt").unlink()
    (folder / "c.txt").write_text(LONG[5] + "\n")  # other bytes: answered, b.txt's answers kept and told
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _answered(run, 2) == 1 and len(read_jsonl(run / "out" / "b.txt.jsonl")) == 3
    assert str(run / "out" / "b.txt.jsonl") in proc.stderr


def test_a_removed_job_yaml_answers_nothing_again_and_a_changed_config_is_still_refused(tmp_path):
    """job.yaml removed by hand: the relaunch read the run as fresh and answered every line again (rerun=none). The
    answer set and config its outputs were made with are taken from their sidecars: nothing is answered again,
    and a changed answer-shaping config is refused as with job.yaml there."""
    folder, run, args = _answered_once(tmp_path, "rerun=none")
    out = run / "out" / "a.txt.jsonl"
    before = out.read_bytes()
    (run / "job.yaml").unlink()
    proc = run_runner([*args, "sampling.max_tokens=5"])
    assert proc.returncode == 2 and "sampling.max_tokens" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and out.read_bytes() == before
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == before and _answered(run, 2) == 0


def test_an_input_renamed_before_the_join_is_joined_and_adopted_by_its_new_name(tmp_path):
    """a.txt renamed b.txt after its ranks answered it and before the join: the next launch joins a.txt's items
    and b.txt takes them over; no line is answered again."""
    folder, run, args, whole = _answered_not_joined(tmp_path)
    os.rename(folder / "a.txt", folder / "c.txt")
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _answered(run, 2) == 0 and not list((run / "out" / "parts").iterdir())
    assert read_jsonl(run / "out" / "c.txt.jsonl") == [{**json.loads(r), "file": "c.txt"}
                                                        for r in whole["a.txt"].splitlines()]


def test_a_first_launch_stopped_before_job_yaml_binds_no_config(tmp_path):
    """A first launch stopped after it laid out out/ (sidecars of files with nothing answered) and before it
    wrote job.yaml: the relaunch, with a config changed meanwhile, is a fresh run, not refused."""
    folder, run, args = _answered_once(tmp_path, "rerun=none")
    (run / "job.yaml").unlink()
    (run / "out" / "a.txt.jsonl").unlink()
    for stats in (run / "stats").iterdir():
        stats.unlink()
    sidecar = run / "out" / "a.txt.fp.json"  # as the launch's plan wrote it: no counts yet
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "answered": None, "errors": None}))
    proc = run_runner([*args, "sampling.max_tokens=5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["line"] for r in read_jsonl(run / "out" / "a.txt.jsonl")] == [1, 2, 3] and _answered(run, 2) == 3
