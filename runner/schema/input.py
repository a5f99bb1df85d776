"""The input group: where the records are and how one becomes a request; one schema per format."""

from dataclasses import dataclass, field
from typing import List

from omegaconf import MISSING

from runner.schema.fields import at_least


@dataclass
class InputConfig:
    """Where the input records are (both modes) and how one becomes a request."""

    # the runner.readers.InputReader subclass that reads the files
    _target_: str = MISSING
    name: str = MISSING
    # a file, a folder (every regular file in it, dotfiles left out) or a glob (`data/*.txt`, `data/**/*.tsv`);
    # per_tile reads <path>/{rank}.in
    path: str = MISSING
    # fields of a record copied into its output record to identify it (after the mode's own rank or file, line)
    id_fields: List[str] = field(default_factory=list)


@dataclass
class TemplatedInputConfig(InputConfig):
    """A format whose records are named fields: the prompt is a template over them."""

    # str.format template over the record's fields ({line}: the whole line, in the text formats)
    template: str = "{line}"


@dataclass
class LinesInputConfig(TemplatedInputConfig):
    """A non-blank line is one record, its only field `line`."""

    _target_: str = "runner.readers.LinesReader"
    name: str = "lines"


@dataclass
class TsvInputConfig(TemplatedInputConfig):
    """A non-blank line is one row of tab-separated columns."""

    _target_: str = "runner.input_tsv.TsvReader"
    name: str = "tsv"
    # true: the first non-blank line of each file names its columns (and is no record)
    header: bool = False
    # column names in file order (with header=true, they rename the header's)
    columns: List[str] = field(default_factory=list)
    # the last column, which takes every remaining field of a longer row, tab-joined (e.g. description); "": a
    # row longer than its columns is an ERROR record. A row shorter than the columns is always one
    rest: str = ""


@dataclass
class JsonlInputConfig(TemplatedInputConfig):
    """A non-blank line is one JSON object: its `messages` (a list of {role, content}) are sent as the chat as
    they are; else the template over its keys is the prompt."""

    _target_: str = "runner.input_jsonl.JsonlReader"
    name: str = "jsonl"
    template: str = "{prompt}"


@dataclass
class OpenAIBatchInputConfig(InputConfig):
    """The OpenAI Batch API's input (also `vllm run-batch`'s): {custom_id, method, url, body} per line; the body's
    messages (url /v1/chat/completions) or prompt (/v1/completions) is sent, its sampling values over `sampling`."""

    _target_: str = "runner.input_openai_batch.OpenAIBatchReader"
    name: str = "openai_batch"
    id_fields: List[str] = field(default_factory=lambda: ["custom_id"])


@dataclass
class ParquetInputConfig(TemplatedInputConfig):
    """A row of a Parquet file is one record (numbered from 1), read a row group at a time."""

    _target_: str = "runner.input_parquet.ParquetReader"
    name: str = "parquet"
    template: str = "{prompt}"
    # rows decoded at once (pyarrow record batches inside a row group): bounds a reader's memory
    batch_rows: int = at_least(1, 4096)
