"""The per-line ledger: torn writes are cut, duplicates dropped, the final file is complete and ordered."""

import json

from runner.record_log import RecordLog, as_jsonl, as_original_text
from runner.records import Record

_BODY = ["prompt", "response", "status", "error", "prompt_tokens", "output_tokens", "finish_reason"]


def _rec(line, text="x"):
    return {"line": line, "prompt": f"p{line}", "response": text}


def test_reopen_cuts_a_torn_last_line_and_keeps_the_rest(tmp_path):
    path = tmp_path / "0.log.jsonl"
    log = RecordLog(path)
    log.append([_rec(1), _rec(2)])
    log.close()
    with open(path, "a") as f:
        f.write('{"line": 3, "prom')  # killed mid-write
    again = RecordLog(path)
    assert again.done() == {1, 2}
    again.append([_rec(3)])
    again.close()
    assert [json.loads(line)["line"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_duplicates_are_written_once_and_finalize_sorts(tmp_path):
    log = RecordLog(tmp_path / "a.log.jsonl")
    log.append([_rec(5), _rec(2)])
    log.append([_rec(2, "again"), _rec(9)])
    out = tmp_path / "a.out"
    log.finalize(out, as_jsonl)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in lines] == [2, 5, 9]
    assert lines[0]["response"] == "x"
    assert not (tmp_path / "a.log.jsonl").exists()


def test_original_text_format_matches_the_old_script():
    assert as_original_text({"prompt": "Hi 'you'", "response": "Hello\n"}) == \
        "Prompt: \"Hi 'you'\", Generated text: 'Hello\\n'"


def test_one_record_schema_for_both_modes_read_back_and_rendered_as_text():
    answered = Record({"rank": 0, "line": 1}, "p", "a", prompt_tokens=3, output_tokens=4, finish_reason="stop")
    failed = Record.failed({"file": "x.tsv", "line": 2, "genome_id": "G2"}, None, "malformed line: ...", "G2\tbad")
    assert list(answered.to_json()) == ["rank", "line", *_BODY]
    assert list(failed.to_json()) == ["file", "line", "genome_id", "input", *_BODY]
    assert failed.to_json()["response"] is None and failed.to_json()["output_tokens"] == 0
    assert [Record.from_json(json.loads(json.dumps(r.to_json()))) for r in (answered, failed)] == [answered, failed]
    assert as_original_text(failed.to_json()) == "Prompt: None, Generated text: ''"  # as when an ERROR had text ""


def test_finalize_after_a_reopen_reads_every_record_back_in_line_order(tmp_path):
    path = tmp_path / "0.log.jsonl"
    first = RecordLog(path, sync_every_s=None)
    first.append([_rec(3, "three"), _rec(1, "one ünïcode")])
    first.close()
    with open(path, "a") as f:
        f.write('{"line": 2, "te')  # killed mid-write
    again = RecordLog(path, sync_every_s=None)
    again.append([_rec(2, "two"), _rec(1, "one again"), _rec(4, "four")])
    out = tmp_path / "0.out"
    again.finalize(out, as_jsonl)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["response"]) for r in records] == [(1, "one ünïcode"), (2, "two"), (3, "three"), (4, "four")]


def test_a_ledger_an_older_runner_left_is_finished_in_the_one_schema(tmp_path):
    """per_tile records of an older runner (`text`, and before that no `status`) resumed by this one."""
    for render, name in ((as_jsonl, "0.out"), (as_original_text, "0.txt")):
        log = RecordLog(tmp_path / f"{name}.log.jsonl")
        log.append([{"rank": 0, "line": 1, "prompt": "p1", "text": "old", "prompt_tokens": 1, "output_tokens": 2,
                     "finish_reason": "stop"}, Record({"rank": 0, "line": 2}, "p2", "new").to_json()])
        log.finalize(tmp_path / name, render)
    records = [json.loads(line) for line in (tmp_path / "0.out").read_text().splitlines()]
    assert [(list(r), r["response"], r["status"]) for r in records] == [
        (["rank", "line", *_BODY], "old", "SUCCESS"), (["rank", "line", *_BODY], "new", "SUCCESS")]
    assert (tmp_path / "0.txt").read_text() == "Prompt: 'p1', Generated text: 'old'\nPrompt: 'p2', Generated text: 'new'\n"
