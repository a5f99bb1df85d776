"""Input readers: the fields a line gives a prompt template, and what makes a line malformed."""

import pytest
from omegaconf import OmegaConf

from runner import prompts
from runner.readers import LinesReader, MalformedLine, TsvReader, reader_of
from runner.schema import ServerPerNodeConfig


def _mode(**values):
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ServerPerNodeConfig), {"input_dir": "x", **values}))


def test_lines_give_the_whole_line_only():
    mode = _mode(prompt_template="Q: {line}")
    assert isinstance(reader_of(mode), LinesReader)
    assert reader_of(mode).fields("a\tb") == {"line": "a\tb"}
    assert prompts.build("a\tb", mode).prompt == "Q: a\tb"


def test_tsv_rows_need_exactly_their_columns_and_a_short_row_keeps_the_ids_it_has():
    mode = _mode(input_format="tsv", columns=["id", "name", "desc"], id_columns=["id"],
                 prompt_template="{name}: {desc}")
    reader = reader_of(mode)
    assert isinstance(reader, TsvReader) and reader.columns() == ["id", "name", "desc"]
    request = prompts.build("7\tdnaA\tinitiator", mode)
    assert (request.prompt, request.ids) == ("dnaA: initiator", {"id": "7"})
    with pytest.raises(MalformedLine, match=r"expected 3 tab-separated columns .* got 2"):
        prompts.build("7\tdnaA", mode)
    assert prompts.ids("7\tdnaA", mode) == {"id": "7"}


def test_the_template_and_id_checks_ask_the_reader_for_its_columns():
    assert "not columns" in prompts.check_template(_mode(prompt_template="{name}"))
    assert prompts.check_template(_mode(input_format="tsv", columns=["name"], prompt_template="{name}")) == ""
    assert "not columns of the input" in prompts.check_id_columns(_mode(id_columns=["name"]))
