"""The launch reads each input file's bytes once: one pass gives the validation, the pre-flight token count and
the spread index (runner/launch_pass.py). Counted in a real `python -m runner ... dry_run=true` launch (no
engine), whose opens of the input files an audit hook records; the plan's numbers are the ones the launch gave
when it read every file three times."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from helpers.cli import ROOT
from helpers.compose import compose_config
from runner.launch_pass import read_inputs
from runner.readers import reader_of
from runner.work_items import index_file

# the launch under an audit hook: every open of a file under the input folder, by file name, written at exit
_COUNTING = """
import atexit, collections, json, os, runpy, sys
folder, out = sys.argv[1], sys.argv[2]
opens = collections.Counter()
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if os.path.dirname(path) == folder:
            opens[os.path.basename(path)] += 1
sys.addaudithook(hook)
atexit.register(lambda: open(out, "w").write(json.dumps(opens)))
sys.argv = ["runner", *sys.argv[3:]]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


def _inputs(folder: Path) -> Path:
    """Two files with the shapes that move offsets: a BOM, CRLF ends, blank lines, multi-byte text, no final
    newline."""
    folder.mkdir()
    a = ["\ufeffName three red things."] + [f"Question {i}: what is {i} + {i}?" for i in range(1, 300)]
    (folder / "a.txt").write_bytes(("\r\n".join(a) + "\r\n").encode())
    b = [f"Décrivez le nombre {i} en une phrase." if i % 7 else "" for i in range(1, 351)]
    (folder / "b.txt").write_text("\n".join(b))
    return folder


def _launch(tmp_path: Path, inputs: Path, ranks: int, *extra: str):
    """(opens per input file, the plan's output, work.json or None) of a dry-run launch over `ranks` local
    ranks."""
    run, counted = tmp_path / f"run{ranks}{len(extra)}", tmp_path / f"opens{ranks}{len(extra)}.json"
    args = [f"input.path={inputs}", f"cluster.ranks_per_node={ranks}", "dry_run=true", "plan_tokens_per_s=100",
            f"hydra.run.dir={run}", *extra]
    proc = subprocess.run([sys.executable, "-c", _COUNTING, str(inputs), str(counted), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = run / "work.json"
    return json.loads(counted.read_text()), proc.stdout, json.loads(work.read_text()) if work.exists() else None


def _offsets(path: Path) -> dict:
    """{line number: byte offset} of every line of the file, read here on its own."""
    found, at = {}, 0
    for number, raw in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        found[number], at = at, at + len(raw)
    return found


def test_a_launch_reads_each_input_once_and_plans_the_same_numbers(tmp_path):
    inputs = _inputs(tmp_path / "in")
    opens, plan, work = _launch(tmp_path, inputs, ranks=2)
    # validation, pre-flight and index share one open; no range is cut inside a file: nothing is looked up
    assert opens == {"a.txt": 1, "b.txt": 1}
    # the numbers of the launch that read every file three times (the tokenizer of SmolLM2, chat prompts)
    assert "lines: 600; prompt tokens: 27770 (longest prompt 48 tokens, a.txt:101)" in plan, plan
    assert [[[k, start, stop, lines] for k, start, stop, _, lines in share] for share in work["shares"]] == [
        [[0, 1, 301, 300]], [[1, 1, 350, 300]]]
    assert work["ends"] == {"a.txt": 301, "b.txt": 350}

    opens, plan, work = _launch(tmp_path, inputs, ranks=3)
    # a range cut inside a file: its start is found from the pass's sparse index by one more open of that file,
    # which reads fewer than 256 lines per cut
    assert opens == {"a.txt": 2, "b.txt": 2}
    assert "lines: 600; prompt tokens: 27770 (longest prompt 48 tokens, a.txt:101)" in plan
    assert [[[k, start, stop, lines] for k, start, stop, _, lines in share] for share in work["shares"]] == [
        [[0, 1, 201, 200]], [[0, 201, 301, 100], [1, 1, 117, 100]], [[1, 117, 350, 200]]]
    files = [Path(p) for p in work["files"]]
    for share in work["shares"]:
        for k, start, _, offset, _ in share:
            assert offset == _offsets(files[k])[start]  # where the rank seeks is where its first line begins

    opens, plan, work = _launch(tmp_path, inputs, 2, "mode=server_per_node")
    assert opens == {"a.txt": 1, "b.txt": 1} and work is None  # validated and counted in one pass, not indexed
    assert "lines: 600; prompt tokens: 27770 (longest prompt 48 tokens, a.txt:101)" in plan


def test_the_pass_indexes_a_file_as_an_index_of_its_own_does(tmp_path):
    inputs = _inputs(tmp_path / "in")
    (inputs / "c.txt").write_bytes(b"x" * 3_000_000 + b"\n\n" + b"y\n" * 1000)  # a line longer than a hashed block
    cfg = compose_config(f"input.path={inputs}")
    reader = reader_of(cfg)
    found = read_inputs(cfg, reader, reader.files())
    assert sorted(found.indexes) == ["a.txt", "b.txt", "c.txt"]
    for name, index in found.indexes.items():
        alone = index_file(inputs / name)
        assert asdict(index.print) == asdict(alone.print)  # the fingerprint the sidecar keeps, blocks and all
        assert (index.lines, index.offsets, index.before, index.end) == (alone.lines, alone.offsets, alone.before,
                                                                        alone.end)


def _batch_line(custom_id: str, question: str) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": question}]}})


def test_a_launch_over_openai_batch_files_reads_each_once_and_still_refuses_a_repeated_custom_id(tmp_path):
    """The repeated-custom_id check is the launch pass's too (two files of 250 lines over 2 ranks: no cut inside
    a file, so one open each): no second read of every batch file (a 2048-host job
    over many large batch files is launched once, and each file's bytes come from the shared filesystem)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text("\n".join(_batch_line(f"a{i}", f"What is {i} + 1?") for i in range(250)) + "\n")
    (inputs / "b.jsonl").write_text("\n".join(_batch_line(f"b{i}", f"Name {i} birds.") for i in range(250)) + "\n")
    for mode in ([], ["mode=server_per_node"]):
        opens, plan, _ = _launch(tmp_path, inputs, 2, "input=openai_batch", *mode)
        assert opens == {"a.jsonl": 1, "b.jsonl": 1}, (mode, opens)
        assert "lines: 500" in plan
    lines = [_batch_line(f"c{i}", f"Count to {i}.") for i in range(50)]
    lines[40] = _batch_line("c7", "A repeat.")
    (inputs / "c.jsonl").write_text("\n".join(lines) + "\n")
    counted = tmp_path / "opens-dup.json"
    proc = subprocess.run([sys.executable, "-c", _COUNTING, str(inputs), str(counted), f"input.path={inputs}",
                           "input=openai_batch", "dry_run=true", f"hydra.run.dir={tmp_path / 'dup'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "custom_id 'c7' is on lines 8, 41" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "dup" / "job.yaml").exists()
    assert json.loads(counted.read_text()) == {"a.jsonl": 1, "b.jsonl": 1, "c.jsonl": 1}
