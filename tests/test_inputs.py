"""Input validation reports every unusable file before anything starts (in the launch's one pass over them)."""

from pathlib import Path
from typing import List

import pytest

from helpers.compose import compose_config
from runner.errors import ConfigError
from runner.inputs import read_lines
from runner.launch_pass import read_inputs
from runner.readers import reader_of


def validate(paths: List[Path]) -> None:
    """The launch's pass over the files (validated, counted, indexed)."""
    cfg = compose_config(f"input.path={paths[0].parent}")
    read_inputs(cfg, reader_of(cfg), paths)


def test_blank_lines_are_skipped_and_numbers_kept(tmp_path):
    path = tmp_path / "0.in"
    path.write_text("a\n\n  \nb\r\n")
    assert [(line.number, line.text) for line in read_lines(path)] == [(1, "a"), (4, "b")]


def test_missing_empty_and_undecodable_files_are_all_reported(tmp_path):
    (tmp_path / "empty.in").write_text("\n\n")
    (tmp_path / "bad.in").write_bytes(b"ok\nbad \xff line\n")
    (tmp_path / "good.in").write_text("fine\n")
    for _ in ("tokenized", "counted before: not tokenized again, still validated"):
        with pytest.raises(ConfigError) as err:
            validate([tmp_path / n for n in ("missing.in", "empty.in", "bad.in", "good.in")])
        message = str(err.value)
        assert "3 input file(s)" in message
        assert "missing.in: missing" in message and "empty.in: empty" in message
        assert "bad.in: line 2 is not UTF-8" in message and "good.in" not in message


def test_a_bad_byte_is_reported_at_its_own_line(tmp_path):
    """The bad byte opens line 5: the line is counted in the file, not in the bytes of the line (was 'line 1')."""
    path = tmp_path / "0.in"
    path.write_bytes(b"one\ntwo\n\nfour\n\xffive\nsix\n")
    with pytest.raises(ConfigError) as err:
        validate([path])
    assert "0.in: line 5 is not UTF-8" in str(err.value) and "byte 1 of the line" in str(err.value)


def test_a_compressed_input_is_named_as_such_with_the_command_that_opens_it(tmp_path):
    """Genomics data often comes gzipped: 'line 1 is not UTF-8' did not say why."""
    import bz2
    import gzip
    import lzma

    text = "".join(f"gene {i} of a bacterium\n" for i in range(200)).encode()
    for name, data in (("a.tsv.gz", gzip.compress(text)), ("b.tsv.bz2", bz2.compress(text)),
                       ("c.tsv.xz", lzma.compress(text))):
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ConfigError) as err:
        validate(sorted(tmp_path.iterdir()))
    message = str(err.value)
    assert "a.tsv.gz is gzip-compressed; decompress it first (gunzip -k a.tsv.gz)" in message
    assert "b.tsv.bz2 is bzip2-compressed" in message and "c.tsv.xz is xz-compressed" in message
