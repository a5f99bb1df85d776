"""mode=per_tile with assign=spread, one rank: answer the work items work.json gives it (runner/spread.py).

Each item is a line range of one input file, read from its byte offset on (the rank never reads the rest of the
file), answered into its own ledger out/parts/<input>.<start>-<stop>.log.jsonl. All the rank's items feed one
engine, so its batch stays full across their ends. An item whose every line has a record is written out sorted
(out/parts/<input>.<start>-<stop>.jsonl, .errors.jsonl when it holds an ERROR record); the job's summary step joins
a file's items into out/<input>.jsonl.

Metadata per rank: one read of work.json, and per item one open of the input, the ledger's create and appends,
the finished item's create and rename and the ledger's removal.
"""

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from omegaconf import DictConfig

from runner import engine, preflight, spread
from runner.devices import DEVICE_VARS
from runner.errors import JobFailedError
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
    lines: List[Entry]
    ledger: RecordLog

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

    def finish(self, run: RunDir) -> bool:
        """Write the item's sorted output once every line has a record; False: lines are left for a rerun."""
        if not all(line.number in self.ledger.done() for line in self.lines):
            self.ledger.close()
            return False
        state = "errors" if self.ledger.errors() else "done"
        self.ledger.finalize(run.piece(self.name, self.piece.start, self.piece.stop, state), as_jsonl)
        return True


def _open(cfg: DictConfig, run: RunDir, reader: InputReader, piece: Piece) -> WorkItem:
    name = Path(piece.path).name
    lines = list(reader.read(Path(piece.path), piece.start, piece.stop, piece.offset))
    ledger = RecordLog(run.piece(name, piece.start, piece.stop, "log"), sync_every_s=cfg.mode.sync_every_s)
    return WorkItem(piece, lines, ledger)


def run_spread(cfg: DictConfig, run: RunDir, placement: Placement, model_path: str,
               stats: WorkerStats) -> WorkerStats:
    """Answer the rank's work items, filling `stats` (the worker writes them, also when this fails)."""
    rank, started = placement.rank, time.monotonic()
    reader = reader_of(cfg)
    items = [_open(cfg, run, reader, piece) for piece in spread.share_of(run, rank)]
    # each line's item, by the line object (the engine hands back the objects it was given; lines of two files may
    # be equal)
    owner = {id(line): item for item in items for line in item.lines}
    retry = _policy(cfg).retries_errors
    todo = [line for item in items for line in item.lines if item.ledger.needs(line.number, retry)]
    total = sum(len(item.lines) for item in items)
    log.info("rank %d on %s: %d work items, %d lines, %d answered before, %d to do", rank, placement.hostname,
             len(items), total, total - len(todo), len(todo))
    tally = Tally()
    stats.name, stats.host, stats.local_rank = f"rank{rank}", placement.hostname, placement.local_rank
    stats.device = {k: os.environ.get(k, "") for k in DEVICE_VARS}
    stats.resumed, stats.record_s = total - len(todo), 0.0
    try:
        todo = _record_malformed(rank, owner, todo, tally)
        if todo and cfg.mode.on_too_long == OnTooLong.record:
            todo = _record_too_long(run, rank, owner, todo, tally)
        if todo:
            answer_all(cfg, rank, todo, lambda pairs: _write(owner, pairs), model_path, stats, tally)
        left = [item for item in items if not item.finish(run)]
    finally:
        stats.count(tally)
        stats.prompts, stats.wall_s = stats.resumed + tally.answered, round(time.monotonic() - started, 3)
    if left:
        lines = sum(item.ledger.needs(line.number, False) for item in left for line in item.lines)
        raise JobFailedError(f"rank {rank} stopped near the walltime with {lines} lines left; rerun the same "
                             "command to resume")
    return stats


def _write(owner: Dict[int, WorkItem], pairs) -> List[dict]:
    """Append each finished answer to its item's ledger; the records."""
    by_item: Dict[int, Tuple[WorkItem, List[dict]]] = {}
    for line, answer in pairs:
        item = owner[id(line)]
        by_item.setdefault(id(item), (item, []))[1].append(item.record(line, answer))
    for item, records in by_item.values():
        item.ledger.append(records)
    return [record for _, records in by_item.values() for record in records]


def _record_malformed(rank: int, owner: Dict[int, WorkItem], todo: List[Entry], tally: Tally) -> List[Entry]:
    """Give the records no request could be built from an ERROR record naming why; the entries left to answer."""
    bad = [(entry, engine.Answer("", 0, 0, "")) for entry in todo if entry.error]
    if not bad:
        return todo
    for record in _write(owner, bad):
        tally.count(record)
    log.warning("rank %d: %d malformed record(s) get an ERROR record", rank, len(bad))
    return [entry for entry in todo if not entry.error]


def _record_too_long(run: RunDir, rank: int, owner: Dict[int, WorkItem], todo: List[Entry],
                     tally: Tally) -> List[Entry]:
    """Give the lines the launch found too long for the model an ERROR record; the lines left to answer."""
    reasons = preflight.read_all(run.too_long_file)
    why = {id(line): reasons.get(owner[id(line)].name, {}).get(line.number) for line in todo}
    long = [(line, engine.Answer("", 0, 0, "", error=why[id(line)])) for line in todo if why[id(line)]]
    if not long:
        return todo
    for record in _write(owner, long):
        tally.count(record)
    log.warning("rank %d: %d line(s) too long for the model get an ERROR record", rank, len(long))
    return [line for line in todo if not why[id(line)]]
