"""The seam of input formats (the `input` config group): which files a job reads, how many records each holds,
and each record as an Entry: the request built from it, or why none could be (it gets an ERROR record naming
that, never a request). A format is an InputReader subclass named by its option's `_target_` (runner/schema/input.py,
conf/input/), in a module of its own where it has real code; modes, the pre-flight check, progress and the rerun
ask the reader, never the format's name.
"""

import fnmatch
import glob
import json
import logging
import os
import re
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from omegaconf import DictConfig, OmegaConf

from runner import inputs, records, run_dir
from runner.errors import ConfigError
from runner.schema import OutputFormat

log = logging.getLogger(__name__)

# shared by every request without ids or sampling values of its own (millions of entries, one empty mapping)
NONE: Mapping[str, Any] = MappingProxyType({})
_GLOB = re.compile(r"[*?[]")


@dataclass(frozen=True, slots=True)
class Request:
    # the prompt sent through the completion path (None: the request is a chat)
    prompt: Optional[str] = None
    # the chat sent through the chat path, [{"role": ..., "content": ...}, ...] (None: a completion)
    messages: Optional[list] = None
    # the record's id fields, copied into its output record after the mode's own ids
    ids: Mapping[str, Any] = field(default_factory=lambda: NONE)
    # this request's sampling values (vLLM's SamplingParams names), over the job's `sampling`
    sampling: Mapping[str, Any] = field(default_factory=lambda: NONE)

    @property
    def text(self) -> Optional[str]:
        """The prompt as an output record shows it: the prompt, a lone user message's content, else the chat as
        JSON."""
        if self.messages is None:
            return self.prompt
        if len(self.messages) == 1 and self.messages[0].get("role") == "user":
            return self.messages[0].get("content")
        return json.dumps(self.messages, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Entry:
    # 1-based: the physical line number in a text file, row index + 1 in a Parquet file
    number: int
    # the record as read (a malformed record's output record keeps it as `input`)
    raw: str
    # what is sent (a malformed record's request has only the ids it could give)
    request: Request
    # why no request could be built ("" when it could)
    error: str = ""


def _style_is_chat(cfg: DictConfig) -> bool:
    style = OmegaConf.select(cfg, "mode.prompt_style", default="chat")
    return getattr(style, "name", style) == "chat"


class InputReader(ABC):
    # False: where a changed file changed cannot be told (a binary format): any change is a change at record 1
    locates_changes = True
    # what output.format=auto writes for this input
    output_format = OutputFormat.jsonl

    def __init__(self, cfg: DictConfig):
        self.input = cfg.input
        self.chat = _style_is_chat(cfg)
        self.id_fields = tuple(self.input.get("id_fields") or ())
        self.template = self.input.get("template")
        self.used = template_fields(self.template) if self.template else set()

    def files(self) -> List[Path]:
        """The input files of input.path (a file, a folder or a glob), sorted."""
        return list_files(str(self.input.path))

    @abstractmethod
    def count(self, path: Path, scanner=None) -> int:
        """The records of a file; a text format feeds `scanner` (its `add`) every raw line as it reads it (see
        read_all)."""

    @abstractmethod
    def read(self, path: Path, start: int = 1, stop: Optional[int] = None,
             offset: Optional[int] = None) -> Iterator[Entry]:
        """The entries numbered start <= number < stop; `offset` (text formats): the byte offset at which the
        line numbered `start` begins, so a reader seeks instead of scanning from the top."""

    @abstractmethod
    def problem(self, path: Path) -> str:
        """'' when the file can be read, else what is wrong with it (missing, empty, undecodable)."""

    def read_all(self, path: Path, scanner=None) -> Iterator[Entry]:
        """Every entry of the file; a text format feeds `scanner` (its `add`) every raw line as it reads it, so
        the launch's one pass also indexes the file (runner.launch_pass). A binary format feeds nothing."""
        return self.read(path)

    def known_fields(self, path: Path) -> Optional[Tuple[str, List[str]]]:
        """(where they come from, the field names) a record of this file has; None: unknown before reading."""
        return None

    def check(self, files: List[Path]) -> str:
        """'' when the template and the id fields fit the files' fields, else what is wrong (one line)."""
        reserved = sorted(set(self.id_fields) & set(records.KEYS))
        if reserved:
            return (f"input.id_fields={list(self.id_fields)} names record keys {reserved}: those would overwrite the "
                    "record's own keys; rename them (input.columns) or leave them out")
        checked = set()
        for path in files:
            found = self.known_fields(path)
            if found is None or (found[0], tuple(found[1])) in checked:
                continue
            checked.add((found[0], tuple(found[1])))
            problem = self._fit(*found)
            if problem:
                return problem
        return ""

    def _fit(self, where: str, known: List[str]) -> str:
        unknown = sorted(self.used - set(known))
        if unknown:
            return (f"input.template uses {unknown}, which are not fields of {where}; known: {sorted(known)}: fix "
                    "input.template")
        missing = [name for name in self.id_fields if name not in known]
        if missing:
            return f"input.id_fields names {missing}, which are not fields of {where}; known: {sorted(known)}"
        return ""

    # building entries
    def ids(self, fields: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self.id_fields:
            return NONE
        return {name: _json_value(fields[name]) for name in self.id_fields if name in fields}

    def plain(self, number: int, raw: str, text: str, ids: Mapping[str, Any]) -> Entry:
        """A plain text under mode.prompt_style: a user message (chat) or the prompt (completion)."""
        request = Request(messages=[{"role": "user", "content": text}], ids=ids) if self.chat else Request(text, ids=ids)
        return Entry(number, raw, request)

    def templated(self, number: int, raw: str, fields: Mapping[str, Any]) -> Entry:
        """The template over the record's fields; a field it needs that is missing or null is an ERROR."""
        ids = self.ids(fields)
        if self.template == "{line}":
            return self.plain(number, raw, raw, ids)
        absent = sorted(name for name in self.used if fields.get(name) is None)
        if absent:
            what = "has no" if any(name not in fields for name in absent) else "has null"
            return malformed(number, raw, f"the record {what} {absent}, which input.template uses; it has "
                                          f"{sorted(k for k in fields if k != 'line')}", ids)
        try:
            text = self.template.format(**fields)
        except (LookupError, AttributeError, ValueError, TypeError) as e:  # {a[9]}, {a.b}, {a:d} on this record
            return malformed(number, raw, f"input.template cannot be filled from this record ({type(e).__name__}: "
                                          f"{e})", ids)
        return self.plain(number, raw, text, ids)


def malformed(number: int, raw: str, error: str, ids: Mapping[str, Any] = NONE) -> Entry:
    return Entry(number, raw, Request(ids=ids), error)


class TextReader(InputReader):
    """A record per non-blank line of a UTF-8 file (CRLF and a byte-order mark at its start taken off)."""

    def count(self, path: Path, scanner=None) -> int:
        return inputs.count_lines(path, scanner)

    def read(self, path: Path, start: int = 1, stop: Optional[int] = None,
             offset: Optional[int] = None) -> Iterator[Entry]:
        return self._entries(path, inputs.iter_lines(path, start, stop, offset))

    def read_all(self, path: Path, scanner=None) -> Iterator[Entry]:
        return self._entries(path, inputs.iter_lines(path, scanner=scanner))

    def _entries(self, path: Path, lines: Iterator[inputs.Line]) -> Iterator[Entry]:
        for line in lines:
            entry = self.entry(path, line)
            if entry is not None:
                yield entry

    @abstractmethod
    def entry(self, path: Path, line: inputs.Line) -> Optional[Entry]:
        """The entry of one non-blank line of the file (None: the line is no record, e.g. a header row)."""

    def problem(self, path: Path) -> str:
        if not path.is_file():
            return f"{path}: missing"
        try:
            if self.count(path):  # decodes every line, not just the first
                return ""
        except inputs.BadText as e:
            return str(e)
        return f"{path}: empty (no record)"


class LinesReader(TextReader):
    """input=lines: the line is the prompt (or the template over {line})."""

    def known_fields(self, path: Path) -> Optional[Tuple[str, List[str]]]:
        return "input=lines", ["line"]

    def entry(self, path: Path, line: inputs.Line) -> Entry:
        return self.templated(line.number, line.text, {"line": line.text})


def json_object(line: inputs.Line) -> Tuple[Optional[dict], str]:
    """(the line's JSON object, "") or (None, why it is not one)."""
    try:
        value = json.loads(line.text)
    except ValueError as e:
        return None, f"not JSON ({e})"
    if not isinstance(value, dict):
        return None, f"a JSON {_JSON_TYPES.get(type(value), type(value).__name__)}, not an object"
    return value, ""


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def messages_problem(messages: Any) -> str:
    """'' when `messages` is a chat vLLM can take as it is: a non-empty list of {role, content} objects."""
    if not isinstance(messages, list) or not messages:
        return "messages is not a non-empty list"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages):
        return "messages holds an item that is not a {role, content} object"
    return ""


def _json_value(value: Any) -> Any:
    """An id as an output record can hold it (a Parquet timestamp or decimal becomes its text)."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def template_fields(template: str) -> Set[str]:
    """The field names a str.format template uses ({a.b} and {a[0]} use `a`); ConfigError when it is no template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"input.template={template!r} is not a valid format string: {e}") from None
    used = {name.split(".")[0].split("[")[0] for _, name, _, _ in parsed if name is not None}
    if "" in used or any(name.isdigit() for name in used):
        raise ConfigError(f"input.template={template!r} has a positional {{}} field: name the field, e.g. {{line}}")
    return used


def list_files(path: str) -> List[Path]:
    """A file; a folder's regular files (dotfiles left out); or a glob's matches; sorted. Two files of one name
    are refused: outputs are named after their input file."""
    given = Path(path)
    if given.is_file():
        return [given]
    if given.is_dir():
        found = _scan(given, "*")
    elif _GLOB.search(path):
        folder, pattern = os.path.split(path)
        found = _scan(Path(folder), pattern) if not _GLOB.search(folder) else _globbed(path)
    else:
        raise ConfigError(f"input.path={path}: no such file or folder; set input.path=FILE, FOLDER or GLOB")
    if not found:
        raise ConfigError(f"input.path={path} holds no input file: set input.path to a file, a folder or a glob")
    names: Dict[str, Path] = {}
    for file in sorted(found):
        if file.name in names:
            raise ConfigError(f"input.path={path} holds two files named {file.name} ({names[file.name]}, {file}): "
                              "outputs are named after their input file; rename one or narrow input.path")
        names[file.name] = file
    return sorted(found)


def _globbed(path: str) -> List[Path]:
    """The files a glob with wildcard folders matches, less those of run directories below its fixed part (a run
    started from the data folder keeps its outputs there: they are no input, on this launch or the next)."""
    parts = Path(path).parts
    root = Path(*parts[:next(k for k, part in enumerate(parts) if _GLOB.search(part))])
    seen: Dict[Path, bool] = {}
    found = [Path(p) for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
    kept = [p for p in found if not run_dir.in_a_run(p, root, seen)]
    if len(kept) < len(found):
        runs = sorted(str(folder) for folder, is_run in seen.items() if is_run)
        log.warning("%s: %d matching files of run directories left out (%s)", path, len(found) - len(kept),
                    ", ".join(runs[:3]) + (" ..." if len(runs) > 3 else ""))
    return kept


def _scan(folder: Path, pattern: str) -> List[Path]:
    """One listing of the folder (no stat per file: the entry's type comes with it, Lustre's metadata server is
    asked once)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return [Path(e.path) for e in entries if not e.name.startswith(".") and fnmatch.fnmatchcase(e.name, pattern)
                and e.is_file()]


def reader_of(cfg: DictConfig) -> InputReader:
    """The reader the job's `input` option names."""
    from runner.options import build

    return build(cfg, "input", InputReader)
