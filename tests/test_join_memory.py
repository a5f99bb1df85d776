"""The spread join (runner/spread.py) streams: joining a file's finished work items into a rendered output and
its Parquet copy holds a bounded number of records, not the input's entries, so its peak memory stays flat as
the file grows (a scientist's file of millions of lines). Each join runs in a child process of its own, on real
files: the launch's plan and sidecars (spread.plan, spread.apply), the finished items a rank would write, then
the join the summary step runs, its peak measured by tracemalloc."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers.cli import ROOT
from helpers.inputs import read_jsonl
from runner.run_dir import parquet_of

_JOIN = """
import json, sys, tracemalloc
from pathlib import Path
from omegaconf import OmegaConf
sys.path.insert(0, "tests")
from helpers.compose import compose_config
from runner import spread
from runner.readers import reader_of
from runner.records import LINE, Record
from runner.run_dir import RunDir
import pyarrow.parquet
from runner.output_openai_batch import _error_info, _skeletons

if "output.format=openai_batch" in sys.argv:  # vLLM's protocol classes, imported before the count
    _skeletons(), _error_info("", 400)


def join(folder, root):
    cfg = compose_config(f"input.path={folder}", *sys.argv[2:])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg.rerun_epoch = "e1"
    run, reader = RunDir(root), reader_of(cfg)
    files = reader.files()
    planned = spread.plan(cfg, run, files, [1.0, 1.0])
    spread.apply(cfg, run, planned, files)
    run.parts.mkdir(parents=True, exist_ok=True)
    for piece in (p for share in planned.shares for p in share):  # as a rank finishes its item
        name = Path(piece.path).name
        with open(run.piece(name, piece.start, piece.stop, "done"), "w") as out:
            for e in reader.read(Path(piece.path), piece.start, piece.stop, piece.offset):
                ids = {"file": name, LINE: e.number, **e.request.ids}
                record = (Record.failed(ids, None, e.error, e.raw) if e.error else
                          Record(ids, e.request.text, f"answer {e.number}", prompt_tokens=3, output_tokens=2,
                                 finish_reason="stop"))
                out.write(json.dumps(record.to_json()) + "\\n")
    tracemalloc.start()
    joined = spread.join_finished(cfg, run, files)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"joined": joined, "peak": peak}


print(json.dumps([join(Path(folder), Path(root)) for folder, root in json.loads(sys.argv[1])]))
"""


def _batch_line(n: int) -> str:
    """An OpenAI batch request: every third a completion, a malformed one now and then."""
    if n % 97 == 0:
        return '{"custom_id": "broken'
    if n % 3 == 0:
        return json.dumps({"custom_id": f"r{n}", "method": "POST", "url": "/v1/completions",
                           "body": {"prompt": f"Count to {n}, please, in words and in digits."}})
    return json.dumps({"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": f"What is {n} times {n}? Say why."}]}})


def _inputs(folder: Path, lines: int, fmt: str) -> None:
    folder.mkdir()
    if fmt == "openai_batch":
        (folder / "x.jsonl").write_text("".join(_batch_line(n) + "\n" for n in range(1, lines + 1)))
    else:
        (folder / "x.txt").write_text("".join(f"Describe the number {n} in one sentence.\n" for n in range(lines)))


def _joins(tmp_path: Path, sizes, fmt: str):
    """Per size: (peak bytes of the join of an input of that many lines, its joined output, its Parquet copy),
    all joined in one child (vLLM's protocol classes, which openai_batch renders with, imported once)."""
    places = [(tmp_path / f"in{n}", tmp_path / f"run{n}") for n in sizes]
    for (folder, _), lines in zip(places, sizes):
        _inputs(folder, lines, fmt)
    args = ["input=openai_batch", "output.format=openai_batch"] if fmt == "openai_batch" else ["output.format=text"]
    args += ["output.parquet=true", "output.parquet_rows=500"]
    proc = subprocess.run([sys.executable, "-c", _JOIN, json.dumps([[str(f), str(r)] for f, r in places]), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = []
    for (folder, root), joined in zip(places, json.loads(proc.stdout.strip().splitlines()[-1])):
        assert joined["joined"] == [p.name for p in folder.iterdir()]
        name = next(folder.iterdir()).name
        output = root / "out" / (f"{name}.jsonl" if fmt == "openai_batch" else f"{name}.out")
        found.append((joined["peak"], output, parquet_of(output)))
    return found


@pytest.mark.parametrize("fmt", ["text", "openai_batch"])
def test_the_join_of_a_rendered_output_and_its_parquet_copy_stays_flat_as_lines_grow(tmp_path, fmt):
    (small, _, _), (big, output, parquet) = _joins(tmp_path, [4000, 32000], fmt)
    assert big < small * 1.5, (small, big)  # 8 times the lines: the same peak (it held them all: ~8 times)
    rows = pq.read_table(parquet)
    assert rows.num_rows == 32000 and rows.column("line").to_pylist() == list(range(1, 32001))
    if fmt == "text":
        text = output.read_text().splitlines()
        assert len(text) == 32000
        assert text[1] == "Prompt: 'Describe the number 1 in one sentence.', Generated text: 'answer 2'"
        return
    answers = read_jsonl(output)
    assert len(answers) == 32000
    kinds = {a["custom_id"]: (a["response"]["body"] or {}).get("object") for a in answers}
    assert kinds["r3"] == "text_completion" and kinds["r4"] == "chat.completion"  # told line by line
    assert sum(a["error"] is not None for a in answers) == 32000 // 97  # the malformed lines' own error
