"""What a finished output holds (`output.format`) and the Parquet copy beside it (`output.parquet`).

The resume ledger holds the records (runner/records.py) in every format; only a finished output is rendered,
when every line of its input has a record. A format other than jsonl cannot be read back as records, so its
ledger is kept beside it (a rerun reopens that, not the output). The Parquet copy is written in the same pass
over the ledger, a row group at a time; a finished output whose copy is missing (killed between the two, or
output.parquet=true set after it finished) gets it on the next launch's rerun.
"""

import json
import logging
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from omegaconf import DictConfig, OmegaConf

from runner import record_log
from runner.errors import ConfigError
from runner.readers import Entry, reader_of
from runner.record_log import RecordLog
from runner.run_dir import Item, parquet_of
from runner.schema import OutputFormat

log = logging.getLogger(__name__)

# the id an openai_batch output line is joined on
CUSTOM_ID = "custom_id"


def format_of(cfg: DictConfig) -> OutputFormat:
    """output.format, `auto` resolved by the input's reader; a job file of an older runner had
    mode.output_format."""
    value = OmegaConf.select(cfg, "output.format", default=None)
    if value is None:
        value = OmegaConf.select(cfg, "mode.output_format", default="jsonl")
    chosen = OutputFormat[getattr(value, "name", value)]
    return reader_of(cfg).output_format if chosen == OutputFormat.auto else chosen


def keeps_ledger(cfg: DictConfig) -> bool:
    """Whether the finished output is something other than the records (its ledger is kept: a rerun reads it)."""
    return format_of(cfg) != OutputFormat.jsonl


def wants_parquet(cfg: DictConfig) -> bool:
    return bool(OmegaConf.select(cfg, "output.parquet", default=False))


def check(cfg: DictConfig) -> None:
    """At launch: output.format=openai_batch names each answer by its custom_id, which the records must carry."""
    if format_of(cfg) == OutputFormat.openai_batch and CUSTOM_ID not in (cfg.input.get("id_fields") or ()):
        raise ConfigError("output.format=openai_batch writes each answer under its custom_id, which input.id_fields "
                          "does not name: use input=openai_batch, add custom_id to input.id_fields, or set "
                          "output.format=jsonl")


def renderer(cfg: DictConfig, entries: Iterable[Entry]) -> Callable[[dict], str]:
    """The function that turns one record into one line of the finished output; records come in line order
    (`entries`, the input's, are walked alongside them)."""
    chosen = format_of(cfg)
    if chosen == OutputFormat.openai_batch:
        from runner.output_openai_batch import BatchRenderer

        return BatchRenderer(cfg.model.name, Completions(entries)).line
    return record_log.as_original_text if chosen == OutputFormat.text else record_log.as_jsonl


class Completions:
    """The line numbers sent as a prompt (/v1/completions; the others were chats), told by walking the input's
    entries alongside the records, which ask in line order: one entry is held, not a file of millions."""

    def __init__(self, entries: Iterable[Entry]):
        self._entries, self._asked = iter(entries), 0
        self._at: Optional[Entry] = next(self._entries, None)

    def __contains__(self, number: int) -> bool:
        if number < self._asked:  # an entry walked past cannot be told again: a wrong body, never silently
            raise ValueError(f"line {number} asked after line {self._asked}: records are rendered in line order")
        self._asked = number
        while self._at is not None and self._at.number < number:
            self._at = next(self._entries, None)
        at = self._at
        return at is not None and at.number == number and at.request.messages is None and at.request.prompt is not None


def write(cfg: DictConfig, item: Item, entries: List[Entry], ledger: RecordLog) -> None:
    """Write the finished output (and its Parquet copy) from every line's newest record in the ledger."""
    render = renderer(cfg, entries)
    if not wants_parquet(cfg):
        ledger.finalize(item.output, render, keep_log=keeps_ledger(cfg))
        return
    from runner.output_parquet import ParquetSink

    with ParquetSink(parquet_of(item.output), id_types(entries), cfg.output.parquet_rows) as sink:
        ledger.finalize(item.output, render, keep_log=keeps_ledger(cfg), each=sink.add)


def complete(cfg: DictConfig, item: Item, entries: Optional[List[Entry]] = None) -> None:
    """A finished output left without its Parquet copy gets it now, from the records (the kept ledger, or the
    JSONL output itself); `entries`: the input's, when they were read already."""
    target = parquet_of(item.output)
    if not wants_parquet(cfg) or target.exists() or not item.output.exists():
        return
    source = item.ledger if keeps_ledger(cfg) else item.output
    if not source.exists():
        log.warning("%s: no records left to write %s from (an older runner's text output)", item.input.name, target)
        return
    from runner.output_parquet import ParquetSink

    log.info("%s: writing its missing %s", item.input.name, target.name)
    entries = reader_of(cfg).read(item.input) if entries is None else entries  # streamed: its ids' types
    records = RecordLog(source, sync_every_s=None).records() if source == item.ledger else _read(source)
    with ParquetSink(target, id_types(entries), cfg.output.parquet_rows) as sink:
        for record in records:
            sink.add(record)


def _read(path: Path):
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw)


def id_types(entries: Iterable[Entry]) -> Dict[str, Optional[type]]:
    """Each input id field's Python type over all entries (None: mixed or only nulls; written as text), and
    whether a malformed entry adds the `input` column (key "input", value str)."""
    seen: Dict[str, set] = {}
    malformed = False
    for entry in entries:  # one pass: `entries` may be the input streamed
        malformed = malformed or bool(entry.error)
        for key, value in entry.request.ids.items():
            kinds = seen.setdefault(key, set())
            if value is not None:
                # an integer past int64 (a 20-digit accession number) fits no Parquet integer: written as text
                kinds.add(str if type(value) is int and not _INT64[0] <= value <= _INT64[1] else type(value))
    types = {key: _one_type(kinds) for key, kinds in seen.items()}
    if malformed:
        types["input"] = str
    return types


_INT64 = (-2 ** 63, 2 ** 63 - 1)


def _one_type(kinds: set) -> Optional[type]:
    if kinds == {int, float}:
        return float
    return next(iter(kinds)) if len(kinds) == 1 else None
