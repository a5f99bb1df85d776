"""Input readers (no engine): each format's records, its malformed ones, and its edge cases on real files."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from helpers.cli import run_runner
from helpers.compose import compose_config
from runner import schema
from runner.errors import ConfigError
from runner.launch_pass import read_inputs
from runner.readers import list_files, reader_of

OPTIONS = {"lines": schema.LinesInputConfig, "tsv": schema.TsvInputConfig, "jsonl": schema.JsonlInputConfig,
           "openai_batch": schema.OpenAIBatchInputConfig, "parquet": schema.ParquetInputConfig}


def _reader(name: str, path: Path, style: str = "chat", **values):
    given = OmegaConf.merge(OmegaConf.structured(OPTIONS[name]), {"path": str(path), **values})
    return reader_of(OmegaConf.create({"mode": {"prompt_style": style}, "input": given}))


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def _summary(entries):
    """(number, the prompt as recorded or None, error) of each entry."""
    return [(e.number, e.request.text, e.error) for e in entries]


def test_lines_blank_lines_crlf_and_a_byte_order_mark(tmp_path):
    path = _write(tmp_path / "a.txt", "\ufeffone\r\n\r\n  \ntwo\r\nthree")
    reader = _reader("lines", path, template="Q: {line}")
    entries = list(reader.read(path))
    assert _summary(entries) == [(1, "Q: one", ""), (4, "Q: two", ""), (5, "Q: three", "")]
    assert entries[0].request.messages == [{"role": "user", "content": "Q: one"}] and entries[0].raw == "one"
    assert reader.count(path) == 3
    completion = list(_reader("lines", path, style="completion").read(path))[1].request
    assert (completion.prompt, completion.messages) == ("two", None)
    offset = len("\ufeffone\r\n\r\n  \n".encode())  # where line 4 begins: a rank seeks there
    assert [e.number for e in reader.read(path, start=4, offset=offset)] == [4, 5]
    assert [e.number for e in reader.read(path, start=2, stop=5)] == [4]


GENOMES = ["genome_id\torganism\tgene_id\tdescription",
           "G1\tE. coli\tdnaA\tinitiator",                          # 4 columns
           "G1\tE. coli\trecA\trecombinase\tEC 3.6.4.12",           # 5
           "G2\tB. subtilis\tspo0A\tregulator\tx\ty\tz",           # 7
           "G2\tB. subtilis\tsigA\tsigma\t1\t2\t3\t4\t5",          # 9
           "G3\tM. tuberculosis\tkatG",                             # 3: too short
           "G3\tM. tuberculosis\tinhA\tenoyl reductase\t"]          # a trailing tab: an empty 5th field


def test_tsv_header_rest_takes_the_remaining_fields_and_short_rows_name_their_column_count(tmp_path):
    path = _write(tmp_path / "g.tsv", "\r\n".join(GENOMES) + "\r\n")
    reader = _reader("tsv", path, header=True, rest="description", id_fields=["genome_id", "gene_id"],
                     template="{gene_id}: {description}")
    assert reader.check([path]) == "" and reader.count(path) == 6
    entries = list(reader.read(path))
    assert _summary(entries)[:4] == [(2, "dnaA: initiator", ""), (3, "recA: recombinase\tEC 3.6.4.12", ""),
                                     (4, "spo0A: regulator\tx\ty\tz", ""), (5, "sigA: sigma\t1\t2\t3\t4\t5", "")]
    short = entries[4]
    assert short.number == 6 and short.request.text is None and short.raw == GENOMES[5]
    assert short.error == ("the row has 3 tab-separated columns, fewer than the 4 wanted: "
                           "['genome_id', 'organism', 'gene_id', 'description']")
    assert dict(short.request.ids) == {"genome_id": "G3", "gene_id": "katG"}
    assert entries[5].request.text == "inhA: enoyl reductase\t"  # the rest of the row, its trailing tab kept
    assert dict(entries[0].request.ids) == {"genome_id": "G1", "gene_id": "dnaA"}


def test_tsv_without_rest_a_longer_row_is_an_error_and_a_trailing_tab_is_an_empty_column(tmp_path):
    path = _write(tmp_path / "g.tsv", "a\tb\tc\na\tb\tc\td\na\tb\t\n")
    reader = _reader("tsv", path, columns=["x", "y", "z"], template="{x}|{y}|{z}")
    entries = list(reader.read(path))
    assert _summary(entries)[0] == (1, "a|b|c", "")
    assert entries[1].error.startswith("the row has 4 tab-separated columns, more than the 3 wanted")
    assert "input.rest=z" in entries[1].error
    assert _summary(entries)[2] == (3, "a|b|", "")


def test_tsv_header_only_is_an_empty_file_and_the_columns_are_checked_against_each_header(tmp_path):
    only = _write(tmp_path / "only.tsv", "id\tname\r\n\r\n")
    other = _write(tmp_path / "other.tsv", "id\tgene\nG1\tdnaA\n")
    reader = _reader("tsv", tmp_path, header=True, template="{name}")
    assert reader.count(only) == 0 and list(reader.read(only)) == []
    assert reader.problem(only) == f"{only}: empty (no record)"
    assert reader.check([only]) == ""
    assert reader.check([only, other]) == ("input.template uses ['name'], which are not fields of other.tsv; known: "
                                           "['gene', 'id', 'line']: fix input.template")
    assert "input.rest=gene is not the last column" in _reader("tsv", tmp_path, header=True, rest="gene",
                                                               columns=["gene", "id"]).check([other])
    assert "input=tsv needs its columns" in _reader("tsv", tmp_path).check([other])
    assert "name one column twice" in _reader("tsv", tmp_path, header=True).check([_write(tmp_path / "d.tsv", "a\ta\n")])


def test_jsonl_messages_as_they_are_a_template_over_keys_and_what_is_no_object(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    lines = [json.dumps({"id": 7, "messages": chat}), json.dumps({"id": 8, "prompt": "Name a planet."}), "[1, 2]",
             "{not json", json.dumps({"id": 9, "question": "x"}), json.dumps({"id": 10, "prompt": None}),
             json.dumps({"id": 11, "messages": "Hi"})]
    path = _write(tmp_path / "a.jsonl", "\n".join(lines) + "\n")
    entries = list(_reader("jsonl", path, id_fields=["id"]).read(path))
    assert entries[0].request.messages == chat and entries[0].request.text == json.dumps(chat)
    assert entries[1].request.messages == [{"role": "user", "content": "Name a planet."}]
    assert [dict(e.request.ids) for e in entries] == [{"id": 7}, {"id": 8}, {}, {}, {"id": 9}, {"id": 10}, {"id": 11}]
    assert entries[2].error == "the line is a JSON array, not an object" and entries[2].raw == "[1, 2]"
    assert entries[3].error.startswith("the line is not JSON")
    assert entries[4].error == "the record has no ['prompt'], which input.template uses; it has ['id', 'question']"
    assert entries[5].error.startswith("the record has null ['prompt']")
    assert entries[6].error == "messages is not a non-empty list"
    assert "names record keys ['status']" in _reader("jsonl", path, id_fields=["status"]).check([path])
    indexed = list(_reader("jsonl", path, template="{prompt[99]}").read(path))[1]
    assert indexed.error.startswith("input.template cannot be filled from this record (IndexError")


def test_openai_batch_requests_their_sampling_and_what_is_no_request(tmp_path):
    rows = [{"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 5,
                      "temperature": 0.5, "stream": True}},
            {"custom_id": "c2", "url": "/v1/completions", "body": {"prompt": "Once", "max_tokens": 3, "seed": 1,
                                                                    "stop": ["\n"]}},
            {"custom_id": "c3", "url": "/v1/embeddings", "body": {"input": "x"}},
            {"custom_id": "c4", "url": "/v1/completions", "body": {"prompt": ["a", "b"]}},
            {"url": "/v1/completions", "body": {"prompt": "x"}}]
    path = _write(tmp_path / "batch.jsonl", "\n".join(map(json.dumps, rows)) + "\n")
    entries = list(_reader("openai_batch", path, style="completion").read(path))
    chat, completion = entries[0].request, entries[1].request
    assert (chat.messages, dict(chat.sampling), dict(chat.ids)) == (
        [{"role": "user", "content": "Hi"}], {"max_tokens": 5, "temperature": 0.5}, {"custom_id": "c1"})
    assert (completion.prompt, completion.messages, dict(completion.sampling)) == (
        "Once", None, {"max_tokens": 3, "seed": 1, "stop": ["\n"]})
    assert "url '/v1/embeddings' is neither" in entries[2].error and dict(entries[2].request.ids) == {"custom_id": "c3"}
    assert "body.prompt is not one string" in entries[3].error
    assert entries[4].error == "the request has no custom_id string"


def _parquet(path: Path, rows: list, group_rows: int) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group_rows)
    return path


def test_parquet_rows_over_row_groups_a_range_reads_only_its_groups_and_nulls_are_errors(tmp_path):
    rows = [{"gene": f"g{i}", "organism": "E. coli" if i != 5 else None, "n": i} for i in range(1, 11)]
    path = _parquet(tmp_path / "a.parquet", rows, group_rows=3)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    reader = _reader("parquet", path, template="{gene} of {organism}", id_fields=["n"], batch_rows=2)
    assert reader.count(path) == 10 and reader.check([path]) == "" and not reader.locates_changes
    entries = list(reader.read(path))
    assert [e.number for e in entries] == list(range(1, 11)) and entries[0].request.text == "g1 of E. coli"
    assert entries[4].error.startswith("the record has null ['organism']")
    assert json.loads(entries[4].raw) == {"gene": "g5", "n": 5, "organism": None}
    assert [dict(e.request.ids) for e in entries[:2]] == [{"n": 1}, {"n": 2}]
    assert [e.number for e in reader.read(path, start=3, stop=8, offset=123)] == [3, 4, 5, 6, 7]
    assert _reader("parquet", path, template="{name}").check([path]) == (
        "input.template uses ['name'], which are not fields of a.parquet; known: ['gene', 'n', 'organism']: fix "
        "input.template")


def test_parquet_with_zero_rows_or_no_parquet_at_all_is_refused_at_launch(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), empty)
    bad = _write(tmp_path / "bad.parquet", "prompt\nnot parquet\n")
    reader = _reader("parquet", tmp_path)
    assert reader.count(empty) == 0 and list(reader.read(empty)) == []
    with pytest.raises(ConfigError) as err:
        read_inputs(compose_config("input=parquet", f"input.path={tmp_path}"), reader, [empty, bad])  # the launch's pass
    assert f"{empty}: empty (no row)" in str(err.value) and f"{bad}: not a Parquet file" in str(err.value)


def test_input_path_a_file_a_folder_or_a_glob_and_two_files_of_one_name_are_refused(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.tsv", ".hidden", "sub/c.txt"):
        _write(folder / name, "x\n")
    assert list_files(str(folder)) == [folder / "a.txt", folder / "b.tsv"]  # .txt too; dotfiles and folders out
    assert list_files(str(folder / "*.txt")) == [folder / "a.txt"]
    assert list_files(str(folder / "**" / "*.txt")) == [folder / "a.txt", folder / "sub" / "c.txt"]
    assert list_files(str(folder / "a.txt")) == [folder / "a.txt"]
    _write(folder / "sub" / "a.txt", "y\n")
    with pytest.raises(ConfigError, match=r"two files named a\.txt"):
        list_files(str(folder / "**" / "*.txt"))
    with pytest.raises(ConfigError, match="no such file or folder"):
        list_files(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="holds no input file"):
        list_files(str(folder / "*.csv"))


def test_a_template_key_no_column_has_is_one_line_before_any_run_directory(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder / "a.tsv", "id\tgene\nG1\tdnaA\n")
    run = tmp_path / "run"
    proc = run_runner(["mode=server_per_node", "input=tsv", f"input.path={folder}", "input.header=true",
                       "input.template='Describe {name}'", "dry_run=true", f"hydra.run.dir={run}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "input.template uses ['name'], which are not fields of a.tsv; known: ['gene', 'id', 'line']: fix input.template")
    assert not run.exists()


def test_files_concatenated_from_exports_with_a_byte_order_mark_each_lose_every_mark(tmp_path):
    """`cat a.tsv b.tsv > all.tsv` of two spreadsheet exports puts b's byte-order mark at the start of a line in
    the middle: it was kept there, a silently wrong id (or prompt) in a TSV and a JSON line that is no JSON."""
    tsv = _write(tmp_path / "all.tsv", "\ufeffG1\tdnaA\r\n" + "\ufeffG2\trecA\r\n")
    entries = list(_reader("tsv", tsv, columns=["genome", "gene"], id_fields=["genome"], template="{gene}").read(tsv))
    assert [dict(e.request.ids) for e in entries] == [{"genome": "G1"}, {"genome": "G2"}]
    offset = len("\ufeffG1\tdnaA\r\n".encode())  # a rank seeks to its range's first line
    assert [dict(e.request.ids) for e in _reader("tsv", tsv, columns=["genome", "gene"], id_fields=["genome"],
                                                   template="{gene}").read(tsv, 2, None, offset)] == [{"genome": "G2"}]
    jsonl = _write(tmp_path / "all.jsonl", '\ufeff{"q": "a"}\n\ufeff{"q": "b"}\n')
    assert _summary(_reader("jsonl", jsonl, template="{q}").read(jsonl)) == [(1, "a", ""), (2, "b", "")]


def test_a_file_whose_lines_end_in_cr_alone_is_refused_at_launch_not_answered_as_one_prompt(tmp_path):
    """An old Mac export (Excel's "Tab Delimited Text" on a Mac) ends its lines in CR alone: read by LF it is one
    line, so its questions went to the model as one prompt (or a TSV's rows as one short or overlong row)."""
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder / "q.txt", "What is DNA?\rWhat is RNA?\rName a base.\r")
    _write(folder / "ok.txt", "A line with a stray\rCR inside.\nAnd another line.\n")  # a lone CR beside LFs is kept
    run = tmp_path / "run"
    proc = run_runner([f"input.path={folder}", "plan=true", f"hydra.run.dir={run}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-2].strip() == (
        f"{folder / 'q.txt'}: its lines end in CR alone (an old Mac export), so it reads as one line; convert them "
        "to LF, e.g. tr '\\r' '\\n' < q.txt > q.lf.txt")
    assert "ok.txt" not in proc.stderr and not run.exists()


def test_a_recursive_glob_keeps_the_inputs_of_another_pipelines_folder_that_has_a_job_yaml_and_an_out(tmp_path):
    """Run directories below a recursive glob are left out (their outputs are no input), but a data folder that
    another pipeline gave a job.yaml and an out/ is no run directory of the runner's: its inputs are kept; a real
    run directory's files are still left out."""
    from runner.readers import list_files

    data = tmp_path / "data"
    (data / "sample1" / "out").mkdir(parents=True)
    (data / "sample1" / "job.yaml").write_text("pipeline: assembly\nthreads: 8\n")
    (data / "sample1" / "genes.txt").write_text("Describe gene a.\n")
    (data / "run" / "out").mkdir(parents=True)
    (data / "run" / "job.yaml").write_text("mode:\n  name: per_tile\nrerun_epoch: 1a2b\n")
    (data / "run" / "out" / "genes.txt").write_text('{"line": 1}\n')
    found = list_files(str(data / "**" / "*.txt"))
    assert found == [data / "sample1" / "genes.txt"], found
