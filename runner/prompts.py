"""Turn an input line into a request prompt and its id columns; a line that does not fit is an error record."""

import string
from dataclasses import dataclass, field
from typing import Dict

from omegaconf import DictConfig

from runner import records
from runner.readers import MalformedLine, reader_of  # noqa: F401  (MalformedLine: prompts.MalformedLine to callers)


@dataclass(frozen=True)
class Request:
    prompt: str
    ids: Dict[str, str] = field(default_factory=dict)


def check_template(mode: DictConfig) -> str:
    """'' when every {field} of the template is a column (or {line}), else what is wrong."""
    known = {"line", *reader_of(mode).columns()}
    try:
        used = {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(mode.prompt_template) if name}
    except ValueError as e:
        return f"mode.prompt_template is not a valid format string: {e}"
    unknown = sorted(used - known)
    return f"mode.prompt_template uses {unknown}, which are not columns; known: {sorted(known)}" if unknown else ""


# the keys of an output record (both modes); an id column of one of these names would overwrite it
RECORD_KEYS = records.KEYS


def check_id_columns(mode: DictConfig) -> str:
    """'' when every id column is a column and no record key, else what is wrong."""
    columns = reader_of(mode).columns()
    reserved = sorted(set(mode.id_columns) & set(RECORD_KEYS))
    if reserved:
        return (f"mode.id_columns={list(mode.id_columns)} names record keys {reserved}: rename those columns in "
                f"mode.columns (and the template) so they do not overwrite the record's own keys")
    unknown = [name for name in mode.id_columns if name not in columns]
    if unknown:
        return (f"mode.id_columns={list(mode.id_columns)} names {unknown}, which are not columns of the input; "
                f"known: {columns} (mode.columns, with mode.input_format=tsv)")
    return ""


def ids(line: str, mode: DictConfig) -> Dict[str, str]:
    """The id columns a line has (all of them when it is well formed)."""
    fields = reader_of(mode).some_fields(line)
    return {name: fields[name] for name in mode.id_columns if name in fields}


def build(line: str, mode: DictConfig) -> Request:
    """The prompt of one line under mode.prompt_template; raises MalformedLine with the reason."""
    fields = reader_of(mode).fields(line)
    try:
        prompt = mode.prompt_template.format(**fields)
    except (KeyError, IndexError) as e:
        raise MalformedLine(f"prompt_template needs {e}, which this line does not have") from None
    return Request(prompt, {name: fields[name] for name in mode.id_columns if name in fields})
