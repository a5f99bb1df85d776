"""The output record: one per input line, with the same keys in both modes.

    {<ids>, ["input",] "prompt", "response", "status", "error", "prompt_tokens", "output_tokens", "finish_reason"}

ids come first: per_tile `rank`, `line`; server_per_node `file`, `line` and the `mode.id_columns`. `input` is
only in the record of a malformed line (the line as read: no prompt could be built from it). A record is written
to the ledger and the outputs as its `to_json()` dict; readers of the ledger (record_log, rerun, progress, the
summary) ask this module for a record's line and status rather than naming keys themselves.
"""

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional

SUCCESS, ERROR = "SUCCESS", "ERROR"
# the key of the input line number, in every record's ids
LINE = "line"
# the keys a mode puts into a record's ids besides `line` (an id column of one of these names would overwrite it)
MODE_IDS = ("rank", "file")
# the key of the input file's name, in the ids of a record keyed by file (per_tile spread, server_per_node)
FILE = "file"


@dataclass
class Record:
    # the line's ids, in the order they are written (see the module doc)
    ids: Dict[str, Any]
    # the prompt sent to the model (None: a malformed line, none could be built)
    prompt: Optional[str]
    # the model's answer (None on ERROR)
    response: Optional[str] = None
    # SUCCESS or ERROR
    status: str = SUCCESS
    # why the line has no answer ("" on SUCCESS)
    error: str = ""
    # tokens of the prompt and of the answer (0 on ERROR)
    prompt_tokens: int = 0
    output_tokens: int = 0
    # vLLM's reason the answer ended ("stop", "length"; None on ERROR)
    finish_reason: Optional[str] = None
    # a malformed line as read (None otherwise)
    input: Optional[str] = field(default=None)

    @classmethod
    def failed(cls, ids: Dict[str, Any], prompt: Optional[str], error: str, input: Optional[str] = None) -> "Record":
        """An ERROR record: the line is not answered; a rerun retries it (rerun=errors)."""
        return cls(ids, prompt, None, ERROR, error, input=input)

    def to_json(self) -> Dict[str, Any]:
        """The dict written as one JSON line: ids first, `input` only when set."""
        out = dict(self.ids)
        if self.input is not None:
            out["input"] = self.input
        out.update({name: getattr(self, name) for name in _BODY})
        return out

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Record":
        """A record read back; one an older runner wrote (per_tile's `text`, no `status`) is read as this one."""
        if _LEGACY_RESPONSE in raw and "response" not in raw:
            raw = {("response" if key == _LEGACY_RESPONSE else key): value for key, value in raw.items()}
        ids = {key: value for key, value in raw.items() if key not in _BODY and key != "input"}
        return cls(ids, **{name: raw.get(name, getattr(_EMPTY, name)) for name in _BODY}, input=raw.get("input"))


# per_tile's name for `response` before the records were one schema: a ledger of an older runner resumed now
_LEGACY_RESPONSE = "text"
_BODY = tuple(f.name for f in fields(Record) if f.name not in ("ids", "input"))
_EMPTY = Record({}, None)
# every key a mode writes itself (ids included): an id column may not take one of these names
KEYS = (LINE, *MODE_IDS, "input", *_BODY)


def line_of(raw: Dict[str, Any]) -> int:
    return raw[LINE]


def is_error(raw: Dict[str, Any]) -> bool:
    return raw.get("status") == ERROR
