"""The finished outputs without an engine: the openai_batch lines of each kind of record, the Parquet copy (types,
row groups, a missing copy written on the next launch), and what the launch refuses (a custom_id twice in one
file, output.format=openai_batch without custom_ids)."""

import json

import pyarrow.parquet as pq
from omegaconf import OmegaConf

from helpers.cli import run_runner
from helpers.inputs import read_jsonl, write_inputs
from runner.output_openai_batch import BatchRenderer
from runner.output_parquet import ParquetSink
from runner.records import Record
from runner.rerun import begin, finish, reopen_finished, todo
from runner.run_dir import Item, parquet_of


def _ok(line, custom_id, text="Paris.", reason="stop"):
    return Record({"rank": 0, "line": line, "custom_id": custom_id}, "q", text, prompt_tokens=30, output_tokens=3,
                  finish_reason=reason).to_json()


def test_batch_lines_of_a_chat_a_completion_a_refused_request_and_a_malformed_line():
    renderer = BatchRenderer("smollm2", completions={2})
    refused = Record.failed({"file": "b", "line": 3, "custom_id": "c"}, "q", "HTTP 400: This model's maximum "
                            "context length is 2048 tokens").to_json()
    retried = Record.failed({"file": "b", "line": 5, "custom_id": "e"}, "q", "failed after 3 retries: HTTP 503: "
                            "busy").to_json()
    malformed = Record.failed({"rank": 0, "line": 4}, None, "the line is not JSON", input="{oops").to_json()
    chat, completion, error, broken, busy = (renderer.output(r) for r in
                                             (_ok(1, "a"), _ok(2, "b", " Paris"), refused, malformed, retried))
    assert chat["custom_id"] == "a" and chat["id"].startswith("vllm-") and chat["error"] is None
    assert chat["response"]["status_code"] == 200 and chat["response"]["request_id"].startswith("vllm-batch-")
    body = chat["response"]["body"]
    assert (body["object"], body["model"], body["id"][:9]) == ("chat.completion", "smollm2", "chatcmpl-")
    assert body["choices"][0]["message"]["content"] == "Paris." and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 30 and body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == 33
    body = completion["response"]["body"]
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == " Paris"
    assert "message" not in body["choices"][0]
    assert error["response"] == {"status_code": 400, "request_id": error["response"]["request_id"], "body": None}
    assert error["error"]["error"]["code"] == 400 and error["error"]["error"]["type"] == "BadRequestError"
    assert error["error"]["error"]["message"].startswith("This model's maximum context length")
    assert busy["response"]["status_code"] == 503 and busy["error"]["error"]["message"].startswith("failed after")
    assert broken == {**broken, "custom_id": None, "error": "the line is not JSON"}
    assert broken["response"]["status_code"] == 400 and broken["response"]["body"] is None
    assert len({chat["id"], completion["id"], error["id"]}) == 3
    assert json.loads(renderer.line(_ok(1, "a")))["custom_id"] == "a"


def test_a_parquet_copy_is_written_a_row_group_at_a_time_with_the_records_keys_and_types(tmp_path):
    records = [Record({"file": "a", "line": n, "id": n, "mixed": [7, "7a", None][n % 3]}, f"p{n}", f"r{n}",
                      prompt_tokens=n, output_tokens=1, finish_reason="stop").to_json() for n in range(1, 8)]
    records[3] = Record.failed({"file": "a", "line": 4, "id": 4, "mixed": 7}, None, "bad", input="raw").to_json()
    path = tmp_path / "a.parquet"
    with ParquetSink(path, {"id": int, "mixed": None, "input": str}, rows=3) as sink:
        for record in records:
            sink.add(record)
    table = pq.ParquetFile(path)
    assert table.metadata.num_row_groups == 3  # 3 + 3 + 1: never the whole output at once
    assert table.schema_arrow.names == ["file", "line", "id", "mixed", "input", "prompt", "response", "status",
                                        "error", "prompt_tokens", "output_tokens", "finish_reason"]
    rows = table.read().to_pylist()
    assert [row["id"] for row in rows] == list(range(1, 8)) and [row["mixed"] for row in rows[:3]] == ["7a", None, "7"]
    for row, record in zip(rows, records):  # every key of the record; `input` null where the record has none
        assert {**row, "mixed": None} == {"input": None, **record, "mixed": None}
    assert not list(tmp_path.glob(".*"))  # no temp file left


def _cfg(tmp_path, **output):
    return OmegaConf.create({"model": {"name": "m", "path": "/p", "engine": {}}, "cluster": {"engine": {}},
                             "sampling": {"max_tokens": 8}, "rerun": "errors", "rerun_epoch": "e1",
                             "mode": {"name": "server_per_node"},
                             "output": {"format": "auto", "parquet": True, "parquet_rows": 2, **output},
                             "input": {"name": "openai_batch", "path": str(tmp_path), "id_fields": ["custom_id"],
                                       "_target_": "runner.input_openai_batch.OpenAIBatchReader"}})


def _request(custom_id, url="/v1/chat/completions"):
    body = {"messages": [{"role": "user", "content": "Hi"}]} if "chat" in url else {"prompt": "Hi"}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def _answer(cfg, item):
    lines, ledger = begin(cfg, item, None)
    if ledger is None:
        return []
    asked = todo(lines, ledger, cfg)
    ledger.append([{"file": item.input.name, "line": e.number, **e.request.ids, "prompt": "Hi",
                    "response": f"answer {e.number}", "status": "SUCCESS", "error": "", "prompt_tokens": 2,
                    "output_tokens": 2, "finish_reason": "stop"} for e in asked])
    finish(cfg, item, lines, ledger)
    return [e.number for e in asked]


def test_an_openai_batch_output_keeps_its_ledger_and_a_missing_parquet_copy_is_written_on_the_next_launch(
        tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join([_request("x"), _request("y", "/v1/completions"), _request("z")]) + "\n")
    item = Item(path, tmp_path / "b.jsonl.jsonl", tmp_path / "b.jsonl.log.jsonl")
    cfg = _cfg(tmp_path)
    assert _answer(cfg, item) == [1, 2, 3]
    lines = read_jsonl(item.output)
    assert [line["custom_id"] for line in lines] == ["x", "y", "z"]
    assert [line["response"]["body"]["object"] for line in lines] == ["chat.completion", "text_completion",
                                                                        "chat.completion"]
    assert item.ledger.exists()  # the records a rerun reopens: the output is not records
    table = parquet_of(item.output)
    assert pq.read_table(table).to_pylist() == read_jsonl(item.ledger)
    for again in (lambda: _answer(cfg, item), lambda: reopen_finished(cfg, [item])):  # per_tile; server_per_node
        table.unlink()  # killed between the output and its copy, or output.parquet=true set afterwards
        assert not again()
        assert pq.read_table(table).to_pylist() == read_jsonl(item.ledger)
    with open(path, "a") as f:
        f.write(_request("w") + "\n")
    reopen_finished(cfg, [item])  # server_per_node's host 0: a file with a finished output is never handed out
    assert not item.output.exists() and len(read_jsonl(item.ledger)) == 3
    assert _answer(cfg, item) == [4]
    assert [line["custom_id"] for line in read_jsonl(item.output)] == ["x", "y", "z", "w"]
    assert [row["custom_id"] for row in pq.read_table(table).to_pylist()] == ["x", "y", "z", "w"]


def test_a_custom_id_twice_in_one_batch_file_is_refused_at_launch_naming_its_lines(tmp_path):
    lines = [_request(name) for name in ("a", "b", "a", "c", "a", "b")]
    inputs = write_inputs(tmp_path / "in", {"0.in": lines, "1.in": [_request("a")]})
    run = tmp_path / "run"
    proc = run_runner(["mode=server_per_node", "input=openai_batch", f"input.path={inputs}", f"hydra.run.dir={run}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert "custom_id 'a' is on lines 1, 3, 5" in error and "0.in" in error and "Traceback" not in proc.stderr
    assert not (run / "job.yaml").exists()


def test_output_format_openai_batch_needs_custom_ids(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"]})
    proc = run_runner([f"input.path={inputs}", "cluster.ranks_per_node=1", "output.format=openai_batch",
                       f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2 and "input.id_fields" in proc.stderr.strip().splitlines()[-1]


def test_job_yaml_names_the_format_auto_picked_and_an_older_job_files_mode_output_format_still_counts(tmp_path):
    import yaml

    from runner import job
    from runner.fingerprint import config_print
    from runner.outputs import format_of

    inputs = write_inputs(tmp_path / "in", {"b.jsonl": [_request("a")]})
    run = tmp_path / "run"
    proc = run_runner(["mode=server_per_node", "input=openai_batch", f"input.path={inputs}", "dry_run=true",
                       f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    new = yaml.safe_load((run / "job.yaml").read_text())
    assert new["output"] == {"format": "openai_batch", "parquet": False, "parquet_rows": 65536}
    old = {**new, "mode": {**new["mode"], "output_format": "jsonl"}}
    del old["output"]  # a job file of a runner before output.format
    (run / "job.yaml").write_text(yaml.safe_dump(old))
    loaded = job.load(run / "job.yaml")
    assert format_of(loaded).name == "jsonl" and "output_format" not in loaded.mode
    assert config_print(OmegaConf.create(old)) == config_print(OmegaConf.create({**new, "output": {"format": "jsonl"}}))
