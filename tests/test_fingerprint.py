"""Input fingerprints tell appends from edits (to the block), and the rerun decision follows from them."""

import json
import os

import pytest
from omegaconf import OmegaConf

from runner import inputs
from runner.fingerprint import Scanner, Sidecar, changed_from, config_print, differing, write_sidecar
from runner.record_log import RecordLog, scan
from runner.rerun import Item, decide
from runner.schema import RerunPolicy


def _print(path, block=16):
    scanner = Scanner(block)
    lines = inputs.read_lines(path, scanner)
    return lines, scanner.finish(path)


def _write(path, lines, end="\n"):
    path.write_text("\n".join(lines) + end)


def test_appended_lines_are_no_change_and_an_edit_is_located_to_its_block(tmp_path):
    path = tmp_path / "a.in"
    _write(path, [f"line {i:02d}" for i in range(1, 11)])  # 8 bytes a line: two lines a 16-byte block
    lines, stored = _print(path)
    assert len(lines) == 10 and len(stored.blocks) == 5 and stored.lines == 10
    with open(path, "a") as f:
        f.write("line 11\n")
    assert changed_from(stored, path) is None
    _write(path, [f"line {i:02d}" if i != 6 else "line XX" for i in range(1, 11)])
    assert changed_from(stored, path) == 5  # line 6 sits in the block of lines 5-6
    _write(path, [f"line {i:02d}" for i in range(1, 11) if i != 2])  # a deleted line shifts all after it
    assert changed_from(stored, path) == 1
    _write(path, [f"line {i:02d}" for i in range(1, 10)])  # the last line deleted
    assert changed_from(stored, path) == 9


def test_a_last_line_without_newline_extended_is_a_change_a_new_line_after_it_is_not(tmp_path):
    path = tmp_path / "a.in"
    _write(path, ["one", "two"], end="")
    _, stored = _print(path)
    path.write_text("one\ntwo\nthree\n")
    assert changed_from(stored, path) is None
    path.write_text("one\ntwothree\n")
    assert changed_from(stored, path) == 2


def test_config_print_names_what_shapes_the_answers():
    base = OmegaConf.create({"model": {"name": "m", "path": "/p", "engine": {"dtype": "bfloat16"}},
                             "cluster": {"engine": {"enforce_eager": True}}, "sampling": {"max_tokens": 8},
                             "mode": {"name": "server_per_node", "concurrency": 8},
                             "input": {"name": "tsv", "path": "/in", "template": "{line}", "columns": []}})
    other = OmegaConf.merge(base, {"mode": {"concurrency": 64}, "sampling": {"max_tokens": 9},
                                   "input": {"template": "Q: {line}", "path": "/moved"}})
    assert differing(config_print(base), config_print(other)) == ["input.template", "sampling.max_tokens"]


def test_decisions_for_a_finished_output_and_a_ledger(tmp_path):
    path, out, ledger_path = tmp_path / "a.in", tmp_path / "a.out", tmp_path / "a.log.jsonl"
    _write(path, ["p1", "p2", "p3"])
    _, now = _print(path)
    item = Item(path, out, ledger_path)
    assert decide(item, None, "e1", RerunPolicy.errors, lambda: 0)[0] == "fresh"
    ledger = RecordLog(ledger_path)
    ledger.append([{"line": 1, "status": "SUCCESS"}, {"line": 2, "status": "ERROR"}])
    ledger.close()
    write_sidecar(ledger_path, Sidecar("e1", {}, now))
    from runner.fingerprint import read_sidecar

    side = read_sidecar(ledger_path)
    assert decide(item, side, "e1", RerunPolicy.errors, lambda: 2)[0] == "resume"
    assert decide(item, side, "e2", RerunPolicy.errors, lambda: 2)[0] == "restart"  # rerun=all made a new epoch
    _write(path, ["p1", "edited", "p3"])
    assert decide(item, side, "e1", RerunPolicy.errors, lambda: 2)[0] == "refuse"
    assert decide(item, side, "e1", RerunPolicy.changed, lambda: 2)[0] == "restart"
    os.replace(ledger_path, out)  # finished, with an ERROR record on line 2
    _write(path, ["p1", "p2", "p3"])
    side.errors, side.answered = [2], 3
    os.utime(path, ns=(now.mtime_ns, now.mtime_ns))
    assert decide(item, side, "e1", RerunPolicy.errors, lambda: 0)[0] == "reopen"
    assert decide(item, side, "e1", RerunPolicy.none, lambda: 0)[0] == "skip"
    with open(path, "a") as f:
        f.write("p4\n")
    assert decide(item, side, "e1", RerunPolicy.none, lambda: 0)[0] == "reopen"


def test_newest_record_wins_an_error_is_retried_a_success_never_twice(tmp_path):
    path = tmp_path / "a.log.jsonl"
    log = RecordLog(path)
    log.append([{"line": 1, "status": "ERROR", "response": "bad"}, {"line": 2, "status": "SUCCESS", "response": "ok"}])
    assert log.needs(1, retry_errors=True) and not log.needs(1, retry_errors=False) and not log.needs(2, True)
    log.append([{"line": 1, "status": "SUCCESS", "response": "fixed"},
                {"line": 2, "status": "SUCCESS", "response": "dup"}])
    log.close()
    assert scan(path) == {1: False, 2: False}
    again = RecordLog(path)
    assert again.errors() == set()
    out = tmp_path / "a.out"
    again.finalize(out, json.dumps)
    assert [json.loads(x)["response"] for x in out.read_text().splitlines()] == ["fixed", "ok"]


def _cfg(tmp_path, output_format="jsonl", **mode):
    return OmegaConf.create({"model": {"name": "m", "path": "/p", "engine": {}}, "cluster": {"engine": {}},
                             "sampling": {"max_tokens": 8}, "rerun": "errors", "rerun_epoch": "e1",
                             "mode": {"name": "per_tile", **mode}, "output": {"format": output_format},
                             "input": {"name": "lines", "path": str(tmp_path), "template": "{line}"}})


def _answer(cfg, item, statuses):
    """What a rank does between rerun.begin and rerun.finish, with made-up answers instead of an engine."""
    from runner.rerun import begin, finish, todo

    lines, ledger = begin(cfg, item, None)
    if ledger is None:
        return []
    asked = todo(lines, ledger, cfg)
    ledger.append([{"line": line.number, "prompt": line.raw, "response": f"answer {line.number}",
                    "status": statuses.get(line.number, "SUCCESS")} for line in asked])
    finish(cfg, item, lines, ledger)
    return [line.number for line in asked]


def test_a_text_output_keeps_its_ledger_so_errors_and_appended_lines_are_answered_later(tmp_path):
    path = tmp_path / "0.in"
    _write(path, ["p1", "p2"])
    item = Item(path, tmp_path / "0.out", tmp_path / "0.log.jsonl")
    cfg = _cfg(tmp_path, output_format="text")
    assert _answer(cfg, item, {2: "ERROR"}) == [1, 2]
    assert item.output.exists() and item.ledger.exists()
    assert _answer(cfg, item, {}) == [2]  # the ERROR record is retried
    with open(path, "a") as f:
        f.write("p3\n")
    assert _answer(cfg, item, {}) == [3]
    assert _answer(cfg, item, {}) == []
    assert item.output.read_text().splitlines() == [f"Prompt: 'p{i}', Generated text: 'answer {i}'" for i in (1, 2, 3)]


def test_a_jsonl_output_goes_back_into_its_ledger_for_an_appended_line_and_rerun_none_keeps_errors(tmp_path):
    path = tmp_path / "0.in"
    _write(path, ["p1", "p2"])
    item = Item(path, tmp_path / "0.out", tmp_path / "0.log.jsonl")
    cfg = _cfg(tmp_path)
    assert _answer(cfg, item, {1: "ERROR"}) == [1, 2]
    assert not item.ledger.exists()
    with open(path, "a") as f:
        f.write("p3\n")
    cfg.rerun = "none"
    assert _answer(cfg, item, {}) == [3]
    assert [json.loads(x)["status"] for x in item.output.read_text().splitlines()] == ["ERROR", "SUCCESS", "SUCCESS"]
    cfg.rerun = "errors"
    assert _answer(cfg, item, {}) == [1]
    cfg.rerun_epoch = "e2"  # rerun=all: everything again
    assert _answer(cfg, item, {}) == [1, 2, 3]


def test_a_parquet_input_rewritten_with_a_row_more_is_refused_not_half_answered_again(tmp_path):
    """A Parquet file's change cannot be located to a row (its footer moves): a changed file is refused under
    rerun=errors (its records might sit on other rows) and answered again whole under rerun=changed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from runner.errors import ConfigError

    path = tmp_path / "0.in"
    pq.write_table(pa.table({"prompt": ["p1", "p2", "p3"]}), path, row_group_size=2)
    item = Item(path, tmp_path / "0.out", tmp_path / "0.log.jsonl")
    cfg = _cfg(tmp_path)
    cfg.input = {"name": "parquet", "_target_": "runner.input_parquet.ParquetReader", "path": str(tmp_path),
                 "template": "{prompt}", "batch_rows": 2}
    assert _answer(cfg, item, {}) == [1, 2, 3]
    assert _answer(cfg, item, {}) == []  # unchanged: nothing to do
    pq.write_table(pa.table({"prompt": ["p1", "p2", "p3", "p4"]}), path, row_group_size=2)
    with pytest.raises(ConfigError, match="changed at or before line 1"):
        _answer(cfg, item, {})
    cfg.rerun = "changed"
    assert _answer(cfg, item, {}) == [1, 2, 3, 4]
