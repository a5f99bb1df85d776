"""The seam of input formats: how one line of an input file becomes the named fields a prompt template is
filled from ({line} is always the whole line). A new format is an InputReader subclass, in a module of its own
once the `input` group picks readers by `_target_` (the formats issue); prompts and the pre-flight count ask the
reader, never the format's name.
"""

from abc import ABC, abstractmethod
from typing import Dict, List

from runner.schema import InputFormat


class MalformedLine(ValueError):
    """The line does not have what its format needs (it gets an ERROR record naming why, never a request)."""


class InputReader(ABC):
    def __init__(self, mode):
        self.mode = mode

    @abstractmethod
    def columns(self) -> List[str]:
        """The field names a line of this format has, besides `line`."""

    @abstractmethod
    def fields(self, line: str) -> Dict[str, str]:
        """The line's named fields; raises MalformedLine when the line does not have them."""

    def some_fields(self, line: str) -> Dict[str, str]:
        """The fields a line has, malformed or not (the ids a malformed line's record can still carry)."""
        return self.fields(line)


class LinesReader(InputReader):
    """input_format=lines: the whole line is the one field."""

    def columns(self) -> List[str]:
        return []

    def fields(self, line: str) -> Dict[str, str]:
        return {"line": line}


class TsvReader(InputReader):
    """input_format=tsv: tab-separated columns named by mode.columns, exactly that many."""

    def columns(self) -> List[str]:
        return list(self.mode.columns)

    def fields(self, line: str) -> Dict[str, str]:
        got, want = line.count("\t") + 1, len(self.mode.columns)
        if got != want:
            raise MalformedLine(f"expected {want} tab-separated columns {list(self.mode.columns)}, got {got}")
        return self.some_fields(line)

    def some_fields(self, line: str) -> Dict[str, str]:
        return {"line": line, **dict(zip(self.mode.columns, line.split("\t")))}


_READERS = {InputFormat.lines: LinesReader, InputFormat.tsv: TsvReader}


def reader_of(mode) -> InputReader:
    """The reader of a server_per_node mode's input_format (a typed config or its dataclass)."""
    return _READERS[InputFormat(getattr(mode.input_format, "value", mode.input_format))](mode)
