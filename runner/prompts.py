"""Turn an input line into a request prompt and its id columns; a line that does not fit is an error record."""

from dataclasses import dataclass, field
from typing import Dict

from omegaconf import DictConfig

from runner.schema import InputFormat


class MalformedLine(ValueError):
    pass


@dataclass(frozen=True)
class Request:
    prompt: str
    ids: Dict[str, str] = field(default_factory=dict)


def build(line: str, mode: DictConfig) -> Request:
    """The prompt of one line under mode.prompt_template; raises MalformedLine with the reason."""
    fields = {"line": line}
    if mode.input_format == InputFormat.tsv:
        values = line.split("\t")
        if len(values) != len(mode.columns):
            raise MalformedLine(f"expected {len(mode.columns)} tab-separated columns {list(mode.columns)}, got {len(values)}")
        fields.update(zip(mode.columns, values))
    try:
        prompt = mode.prompt_template.format(**fields)
    except (KeyError, IndexError) as e:
        raise MalformedLine(f"prompt_template needs {e}, which this line does not have") from None
    return Request(prompt, {name: fields[name] for name in mode.id_columns if name in fields})
