"""mode=per_tile with assign=spread, one rank: answer the work items work.json gives it (runner/spread.py).

Each item is a line range of one input file, read from its byte offset on (the rank never reads the rest of the
file), answered into its own ledger out/parts/<input>.<start>-<stop>.log.jsonl. All the rank's items feed one
engine, so its batch stays full across their ends. The lines are read as the engine takes them (the engine
starts before the share is read, and a share of millions of lines is not held: the entries in flight, 8 bytes
per line read, and the ledger's index of the answered lines). An item whose every line has a record is written out sorted
(out/parts/<input>.<start>-<stop>.jsonl, .errors.jsonl when it holds an ERROR record); the job's summary step joins
a file's items into out/<input>.jsonl.

Metadata per rank: one read of work.json, and per item one open of the input, the ledger's create and appends,
the finished item's create and rename and the ledger's removal.
"""

import itertools
import logging
import os
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from omegaconf import DictConfig

from runner import engine, inflight, preflight, spread
from runner.devices import DEVICE_VARS
from runner.errors import JobFailedError
from runner.inflight import ALONE, Journal
from runner.rank_engine import answer_all
from runner.readers import Entry, InputReader, reader_of
from runner.record_log import RecordLog, as_jsonl
from runner.records import LINE, Record
from runner.rerun import _policy
from runner.run_dir import RunDir
from runner.schema import OnTooLong
from runner.stats import WorkerStats
from runner.tally import Tally
from runner.topology import Placement
from runner.work_items import Piece

log = logging.getLogger(__name__)


@dataclass
class WorkItem:
    piece: Piece
    ledger: RecordLog
    # the record numbers read so far, 8 bytes each: the entries themselves are not kept (a rank's share can be
    # millions of lines; it holds only those in flight)
    numbers: array = field(default_factory=lambda: array("q"))
    # every record of the range was read (a walltime stop leaves the rest unread, so the item unfinished)
    read_all: bool = False
    journal: Optional[Journal] = None
    # lines a dead rank had in flight with no record since (runner/inflight.py): answered apart, not in the stream
    suspects: Set[int] = field(default_factory=set)

    @property
    def name(self) -> str:
        return Path(self.piece.path).name

    def record(self, entry: Entry, answer: engine.Answer) -> dict:
        ids = {"file": self.name, LINE: entry.number, **entry.request.ids}
        if entry.error:  # malformed: no request could be built from it
            return Record.failed(ids, None, entry.error, entry.raw).to_json()
        if answer.error:
            return Record.failed(ids, entry.request.text, answer.error).to_json()
        return Record(ids, entry.request.text, answer.text, prompt_tokens=answer.prompt_tokens,
                      output_tokens=answer.output_tokens, finish_reason=answer.finish_reason).to_json()

    def answered_before(self, retry: bool) -> int:
        """Lines of the range with a record a rerun keeps (the ledger holds this range's lines only)."""
        return len(self.ledger.done()) - (len(self.ledger.errors()) if retry else 0)

    def finish(self, run: RunDir) -> bool:
        """Write the item's sorted output once every line has a record; False: lines are left for a rerun."""
        if not self.read_all or not all(number in self.ledger.done() for number in self.numbers):
            self.ledger.close()
            return False
        state = "errors" if self.ledger.errors() else "done"
        self.ledger.finalize(run.piece(self.name, self.piece.start, self.piece.stop, state), as_jsonl)
        self.journal.remove()
        return True


def _open(cfg: DictConfig, run: RunDir, piece: Piece) -> WorkItem:
    ledger = RecordLog(run.piece(Path(piece.path).name, piece.start, piece.stop, "log"),
                       sync_every_s=cfg.mode.sync_every_s)
    return WorkItem(piece, ledger, journal=Journal(run.journal(Path(piece.path).name, piece.start, piece.stop)))


def _to_answer(items: List[WorkItem], reader: InputReader, retry: bool, owner: Dict[int, WorkItem]) -> Iterator[Entry]:
    """The entries still to answer, item after item, read as the engine takes them; each one's item is noted in
    `owner` (by the entry object: the engine hands back the objects it was given) until its record is written."""
    for item in items:
        piece = item.piece
        entries = reader.read(Path(piece.path), piece.start, piece.stop, piece.offset)
        entry = next(entries, None)
        while entry is not None:
            # one entry ahead: the item is read whole once its last entry is taken (a walltime stop right after
            # it must not leave an answered item unfinished)
            following = next(entries, None)
            item.numbers.append(entry.number)
            item.read_all = following is None
            if item.ledger.needs(entry.number, retry) and entry.number not in item.suspects:
                owner[id(entry)] = item
                yield entry
            entry = following
        item.read_all = True


def run_spread(cfg: DictConfig, run: RunDir, placement: Placement, model_path: str,
               stats: WorkerStats) -> WorkerStats:
    """Answer the rank's work items, filling `stats` (the worker writes them, also when this fails)."""
    rank, started = placement.rank, time.monotonic()
    items = [_open(cfg, run, piece) for piece in spread.share_of(run, rank)]
    retry = _policy(cfg).retries_errors
    total = sum(item.piece.lines for item in items)
    before = sum(item.answered_before(retry) for item in items)
    log.info("rank %d on %s: %d work items, %d lines, %d answered before, about %d to do", rank,
             placement.hostname, len(items), total, before, total - before)
    tally, owner = Tally(), {}
    stats.name, stats.host, stats.local_rank = f"rank{rank}", placement.hostname, placement.local_rank
    stats.device = {k: os.environ.get(k, "") for k in DEVICE_VARS}
    stats.resumed, stats.record_s = before, 0.0
    try:
        answerable = _Answerable(run, rank, owner, tally, cfg.mode.on_too_long == OnTooLong.record)
        groups = _suspects(items, reader_of(cfg), owner, tally, retry)
        todo = answerable.filter(_to_answer(items, reader_of(cfg), retry, owner))
        first = next(todo, None)
        if first is not None or groups:  # no engine for a share with nothing left to answer
            answer_all(cfg, rank, itertools.chain([] if first is None else [first], todo), lambda pairs: _write(owner, pairs),
                       model_path, stats, tally, expected=total - before, first=groups,
                       journal=lambda batch, level: _journal(owner, batch, level))
        answerable.close()
        left = [item for item in items if not item.finish(run)]
    finally:
        stats.count(tally)
        stats.prompts, stats.wall_s = stats.resumed + tally.answered, round(time.monotonic() - started, 3)
    if left:
        lines = sum(max(item.piece.lines - len(item.ledger.done()), 0) for item in left)
        raise JobFailedError(f"rank {rank} stopped near the walltime with about {lines} lines left; rerun the same "
                             "command to resume")
    return stats


def _suspects(items: List[WorkItem], reader: InputReader, owner: Dict[int, WorkItem], tally: Tally,
              retry: bool) -> List[list]:
    """The lines a dead rank had in flight and no record since, as the groups to answer alone first (a line it
    died under alone gets its ERROR record here)."""
    groups, alone = [], []
    for item in items:
        # a line to answer again (an ERROR record under rerun=errors: the one it died under alone last time)
        # is a suspect too, or each rerun would put it back into a full top-up and die with it
        levels = item.journal.died(lambda number: not item.ledger.needs(number, retry))
        if not levels:
            continue
        item.suspects, last = set(levels), max(levels)
        piece, entries = item.piece, []
        for entry in reader.read(Path(piece.path), piece.start, piece.stop, piece.offset):
            if entry.number in levels:
                owner[id(entry)] = item
                (alone if levels[entry.number] == ALONE else entries).append(entry)
            if entry.number >= last:
                break
        groups += inflight.groups(levels, entries)
    error = "the rank died (its process ended) with this line alone in its engine: the line is left unanswered"
    for record in _write(owner, [(entry, engine.Answer("", 0, 0, "", error=error)) for entry in alone]):
        tally.count(record)
    if groups or alone:
        log.warning("%d line(s) were in flight when a rank of this share died: %d in %d group(s) are answered "
                    "alone first, %d that it died under alone get an ERROR record",
                    sum(map(len, groups)) + len(alone), sum(map(len, groups)), len(groups), len(alone))
    return groups


def _journal(owner: Dict[int, WorkItem], batch: List[Entry], level: int) -> None:
    """One append per item of the batch, before it goes into the engine."""
    by_item: Dict[int, Tuple[WorkItem, List[int]]] = {}
    for entry in batch:
        item = owner[id(entry)]
        by_item.setdefault(id(item), (item, []))[1].append(entry.number)
    for item, numbers in by_item.values():
        item.journal.append(numbers, level)


def _write(owner: Dict[int, WorkItem], pairs) -> List[dict]:
    """Append each finished answer to its item's ledger; the records."""
    by_item: Dict[int, Tuple[WorkItem, List[dict]]] = {}
    for line, answer in pairs:
        item = owner.pop(id(line))
        by_item.setdefault(id(item), (item, []))[1].append(item.record(line, answer))
    for item, records in by_item.values():
        item.ledger.append(records)
    return [record for _, records in by_item.values() for record in records]


class _Answerable:
    """The entries an engine must answer: a malformed one (no request could be built) and, under
    mode.on_too_long=record, one the launch found too long get their ERROR record here instead, written in
    batches as the stream passes them."""

    _BATCH = 1024

    def __init__(self, run: RunDir, rank: int, owner: Dict[int, WorkItem], tally: Tally, too_long: bool):
        self.rank, self.owner, self.tally = rank, owner, tally
        self.reasons = preflight.read_all(run.too_long_file) if too_long else {}
        self.pending: List[Tuple[Entry, engine.Answer]] = []
        self.malformed = self.long = 0

    def filter(self, entries: Iterator[Entry]) -> Iterator[Entry]:
        for entry in entries:
            why = self.reasons.get(self.owner[id(entry)].name, {}).get(entry.number) if self.reasons else None
            if not entry.error and not why:
                yield entry
                continue
            self.malformed, self.long = self.malformed + bool(entry.error), self.long + (not entry.error)
            self.pending.append((entry, engine.Answer("", 0, 0, "", error=None if entry.error else why)))
            if len(self.pending) >= self._BATCH:
                self._flush()
        self._flush()

    def _flush(self) -> None:
        for record in _write(self.owner, self.pending):
            self.tally.count(record)
        self.pending = []

    def close(self) -> None:
        """Write what is pending (a stream stopped at the walltime) and say what got an ERROR record."""
        self._flush()
        if self.malformed:
            log.warning("rank %d: %d malformed record(s) get an ERROR record", self.rank, self.malformed)
        if self.long:
            log.warning("rank %d: %d line(s) too long for the model get an ERROR record", self.rank, self.long)
