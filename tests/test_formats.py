"""The input formats for real, in both modes: a TSV with a header and mixed column counts, a Parquet file of
several row groups and a JSONL with and without messages, each killed (SIGKILL of the launch) mid-run and
resumed, every row answered exactly once; an OpenAI batch file's per-request sampling in both modes.

Each (format, mode) is its own killed and resumed job: a reader's numbering must survive a kill in both modes'
ways of resuming (per_tile's rank ledger, server_per_node's file queue)."""

import json
import os
import signal
import subprocess
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.cli import ROOT, run_runner, runner_argv
from helpers.inputs import read_jsonl
from helpers.processes import run_processes, tagged_env, wait_for

pytestmark = pytest.mark.engine

# ignore_eos: every answer runs to max_tokens, so the job takes long enough to be killed in the middle
PER_TILE = ["mode.assign=by_rank", "cluster.ranks_per_node=1",
            "mode.max_in_flight=2", "sampling.max_tokens=16", "+sampling.ignore_eos=true"]
SERVER = ["mode=server_per_node", "mode.port=0", "mode.concurrency=2", "sampling.max_tokens=16",
          "+sampling.ignore_eos=true"]


# where each mode puts a file's ledger, output and stats (per_tile by rank: its rank's file is 0.in)
LAYOUTS = {
    "per_tile": (PER_TILE, "0.log.jsonl", "0.out", "rank0.json", "rank"),
    "server_per_node": (SERVER, "0.in.log.jsonl", "0.in.jsonl", "host0.json", "file"),
}


def _complete_records(ledger):
    text = ledger.read_text() if ledger.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def _killed_mid_run(args, ledger, successes: int):
    """Start the job; SIGKILL its launch once the ledger holds `successes` answers; the records it kept."""
    tag = uuid.uuid4().hex
    job = subprocess.Popen(runner_argv(args), cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, **tagged_env(tag)})
    deadline = time.time() + 600
    while job.poll() is None and time.time() < deadline and sum(
            r["status"] == "SUCCESS" for r in _complete_records(ledger)) < successes:
        time.sleep(0.1)
    assert job.poll() is None, "the job ended before it was killed"
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert wait_for(lambda: not run_processes(tag), 60), f"outlived the killed launch: {run_processes(tag)}"
    return _complete_records(ledger)


def _resumed(args, output, before, rows: int, stats_file):
    """Rerun the same command: every row once in the output, the answers kept from before the kill not asked
    again. Returns the output's records."""
    proc = run_runner(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(output)
    kept = {r["line"]: r for r in before if r["status"] == "SUCCESS"}
    assert kept and len(kept) < rows, "the kill came before the first or after the last answer"
    assert len(records) == rows and len({r["line"] for r in records}) == rows
    assert all(r == kept[r["line"]] for r in records if r["line"] in kept)
    stats = json.loads(stats_file.read_text())
    assert (stats["resumed"], stats["prompts"]) == (len(kept), rows), stats
    return records


TSV_HEADER = "genome_id\torganism\tgene_id\tdescription"
# 4, 5, 7 and 9 columns (an optional field, extra annotations) and two short rows (3 and 2 columns)
TSV_ROWS = [f"G{i}\tEscherichia coli\tgene{i}\t" + "\t".join(["note"] * (1 + [0, 1, 3, 5][i % 4])) for i in range(18)]
TSV_ROWS[5:5] = ["G90\tEscherichia coli\tshort"]
TSV_ROWS[12:12] = ["G91\tonly two"]


@pytest.mark.parametrize("mode", list(LAYOUTS))
def test_tsv_with_a_header_and_mixed_column_counts_killed_and_resumed(tmp_path, mode):
    mode_args, ledger, output, stats, first_id = LAYOUTS[mode]
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "0.in").write_text("\r\n".join([TSV_HEADER, *TSV_ROWS]) + "\r\n")
    run = tmp_path / "run"
    args = ["input=tsv", f"input.path={inputs}", "input.header=true", "input.rest=description",
            "input.id_fields=[genome_id,gene_id]", "input.template='Describe {gene_id} of {organism}: {description}'",
            *mode_args, f"hydra.run.dir={run}"]
    before = _killed_mid_run(args, run / "out" / ledger, successes=4)
    records = _resumed(args, run / "out" / output, before, len(TSV_ROWS), run / "stats" / stats)
    assert [r["line"] for r in records] == list(range(2, len(TSV_ROWS) + 2))  # line 1 is the header
    short = {r["genome_id"]: r for r in records if r["status"] == "ERROR"}
    assert sorted(short) == ["G90", "G91"]
    assert short["G90"]["error"].startswith("the row has 3 tab-separated columns, fewer than the 4 wanted")
    assert short["G91"]["error"].startswith("the row has 2 tab-separated columns")
    assert short["G90"]["input"] == "G90\tEscherichia coli\tshort" and short["G90"]["gene_id"] == "short"
    good = [r for r in records if r["status"] == "SUCCESS"]
    assert len(good) == 18 and all(r["output_tokens"] == 16 for r in good)
    nine = next(r for r in good if r["gene_id"] == "gene3")  # 9 columns: the description takes the last six
    assert nine["prompt"] == "Describe gene3 of Escherichia coli: " + "\t".join(["note"] * 6)
    assert list(nine)[:4] == [first_id, "line", "genome_id", "gene_id"]


@pytest.mark.parametrize("mode", list(LAYOUTS))
def test_parquet_of_several_row_groups_killed_and_resumed(tmp_path, mode):
    mode_args, ledger, output, stats, _ = LAYOUTS[mode]
    inputs = tmp_path / "in"
    inputs.mkdir()
    rows = [{"id": 100 + i, "question": None if i == 7 else f"Name a city, number {i}."} for i in range(18)]
    pq.write_table(pa.Table.from_pylist(rows), inputs / "0.in", row_group_size=5)  # per_tile reads {rank}.in
    assert pq.ParquetFile(inputs / "0.in").metadata.num_row_groups == 4
    run = tmp_path / "run"
    args = ["input=parquet", f"input.path={inputs}", "input.template='{question}'", "input.id_fields=[id]",
            "input.batch_rows=2", *mode_args, f"hydra.run.dir={run}"]
    before = _killed_mid_run(args, run / "out" / ledger, successes=4)
    records = _resumed(args, run / "out" / output, before, len(rows), run / "stats" / stats)
    assert [(r["line"], r["id"]) for r in records] == [(i + 1, 100 + i) for i in range(18)]
    null = records[7]
    assert null["status"] == "ERROR" and null["error"].startswith("the record has null ['question']")
    assert json.loads(null["input"]) == {"id": 107, "question": None}
    assert all(r["status"] == "SUCCESS" and r["prompt"] == rows[i]["question"] for i, r in enumerate(records) if i != 7)


@pytest.mark.parametrize("mode", list(LAYOUTS))
def test_jsonl_with_and_without_messages_killed_and_resumed(tmp_path, mode):
    mode_args, ledger, output, stats, _ = LAYOUTS[mode]
    inputs = tmp_path / "in"
    inputs.mkdir()
    lines = [json.dumps({"id": i, "messages": [{"role": "user", "content": f"Name a color, {i}."}]}) if i % 2 else
             json.dumps({"id": i, "topic": f"number {i}"}) for i in range(16)]
    lines[3:3] = ["[1, 2, 3]"]
    (inputs / "0.in").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    args = [*mode_args, "input=jsonl", f"input.path={inputs}", "input.template='Write about {topic}.'",
            "input.id_fields=[id]", f"hydra.run.dir={run}"]
    before = _killed_mid_run(args, run / "out" / ledger, successes=4)
    records = _resumed(args, run / "out" / output, before, len(lines), run / "stats" / stats)
    assert [r["line"] for r in records] == list(range(1, len(lines) + 1))
    array = records[3]
    assert array["status"] == "ERROR" and array["error"] == "the line is a JSON array, not an object"
    good = [r for r in records if r["status"] == "SUCCESS"]
    assert [r["id"] for r in good] == list(range(16)) and all(r["output_tokens"] == 16 for r in good)
    assert good[1]["prompt"] == "Name a color, 1." and good[2]["prompt"] == "Write about number 2."


BATCH = [
    # a chat with its own max_tokens (OpenAI's newer name for it)
    {"custom_id": "chat-3", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}],
              "max_completion_tokens": 3}},
    # a completion: no chat template around the prompt
    {"custom_id": "completion-2", "method": "POST", "url": "/v1/completions",
     "body": {"prompt": "The capital of France is", "max_tokens": 2, "seed": 1, "temperature": 0.7}},
    # a value vLLM refuses: an ERROR record for this line only
    {"custom_id": "refused", "method": "POST", "url": "/v1/chat/completions",
     "body": {"messages": [{"role": "user", "content": "Hi"}], "temperature": -1}},
    # nothing of its own: the job's sampling (max_tokens=5)
    {"custom_id": "job-default", "method": "POST", "url": "/v1/chat/completions",
     "body": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a planet."}]}},
    {"custom_id": "embeddings", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}},
]


@pytest.mark.parametrize("mode", [[], ["mode=server_per_node", "mode.port=0"]], ids=["per_tile", "server_per_node"])
def test_openai_batch_requests_carry_their_own_sampling_and_path_in_both_modes(tmp_path, mode):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "0.in").write_text("".join(json.dumps(request) + "\n" for request in BATCH))
    run = tmp_path / "run"
    proc = run_runner([*mode, "input=openai_batch", f"input.path={inputs}", "cluster.ranks_per_node=1",
                       "sampling.max_tokens=5", "+sampling.ignore_eos=true", "output.format=jsonl",
                       "output.parquet=true", "output.parquet_rows=2", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = run / "out" / "0.in.jsonl"  # one output per input file in both modes (per_tile spreads its ranks)
    # the Parquet copy beside it holds the same records, the `input` of a malformed line null in the others
    table = pq.ParquetFile(run / "out" / "0.in.parquet")
    assert table.metadata.num_row_groups > 1
    assert table.read().to_pylist() == [{"input": None, **r} for r in read_jsonl(output)]
    records = {r["custom_id"]: r for r in read_jsonl(output)}
    assert list(records) == [request["custom_id"] for request in BATCH]
    tokens = {name: records[name]["output_tokens"] for name in ("chat-3", "completion-2", "job-default")}
    assert tokens == {"chat-3": 3, "completion-2": 2, "job-default": 5}
    assert records["completion-2"]["prompt_tokens"] < 10 < records["chat-3"]["prompt_tokens"]  # no chat template
    assert records["completion-2"]["prompt"] == "The capital of France is"
    assert json.loads(records["job-default"]["prompt"])[0] == {"role": "system", "content": "Be brief."}
    refused = records["refused"]
    assert refused["status"] == "ERROR" and "temperature" in refused["error"] and refused["output_tokens"] == 0
    assert records["embeddings"]["status"] == "ERROR" and "url '/v1/embeddings' is neither" in records["embeddings"]["error"]
