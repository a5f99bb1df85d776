"""per_tile's input files spread over its ranks (mode.assign=spread): what the launch plans, what a rank reads,
and how a file's work items are joined into its one output, out/<input>.jsonl.

The launch (one process, holding the run's lock) looks at each input file as server_per_node's rerun rules do
(runner.rerun.decide: the file's sidecar out/<input>.fp.json, fingerprint and answer set) and at its work items
in out/parts/ (one listing): a range with a ledger keeps its bounds (its records are keyed by them); every line no
work item covers is cut afresh for the ranks of this launch (runner.work_items), so a rerun with more or fewer
ranks spreads what is left over all of them. It writes work.json (every rank's items) once; a rank reads it once
and seeks to its ranges. A rank finishes an item by writing its sorted output (out/parts/<input>.<a>-<b>.jsonl,
or .errors.jsonl when it holds an ERROR record, so a rerun knows which to open again without reading them).

Joined by one process: the job's summary step (after every rank ended), the launch of a rerun, or
`python -m runner.summary` (Slurm jobs run no step after their ranks). A file is joined only when finished items
cover all its lines: their outputs are concatenated in line order into out/<input>.jsonl (atomically, the
sidecar's counts first), then removed. Two joiners at once (a user's summary beside the job's) write the same
bytes under the same name, and a joiner that finds an item gone finds the file joined.
"""

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from omegaconf import DictConfig

from runner import atomic, outputs
from runner.errors import ConfigError
from runner.fingerprint import Sidecar, config_print, read_sidecar, write_sidecar
from runner.record_log import scan
from runner.records import is_error, line_of
from runner.rerun import _policy, decide
from runner.run_dir import Item, RunDir
from runner.schema import OutputFormat
from runner.readers import reader_of
from runner.work_items import FileIndex, Piece, deal, gaps_of, index_of, piece_of

log = logging.getLogger(__name__)

_LISTED = 5


@dataclass
class Plan:
    """What a launch does: per rank its work items; the files' actions, applied by `apply`."""

    shares: List[List[Piece]]
    # name -> (action, why) as runner.rerun.decide says
    actions: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    indexes: Dict[str, FileIndex] = field(default_factory=dict)
    # reopened joined outputs: name -> (the stop of the range of lines they hold, "log" to answer its ERROR
    # records again or "done")
    reopened: Dict[str, Tuple[int, str]] = field(default_factory=dict)
    # the files with lines for the ranks (the others can be joined now)
    pending: Set[str] = field(default_factory=set)
    refused: List[str] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return sum(p.lines for share in self.shares for p in share)


def plan(cfg: DictConfig, run: RunDir, files: List[Path], weights: List[float],
         indexes: Optional[Dict[str, FileIndex]] = None) -> Plan:
    """Read-only: each file's action and the work items of every rank (`weights`: each rank's engine size;
    `indexes`: the files' indexes the launch's pass made, by name; a file without one is indexed here)."""
    indexes = indexes or {}
    listed = run.pieces()
    fixed, gaps, result = [], [], Plan([])
    for path in files:
        if _finished(cfg, run, path):  # not read: a rerun with nothing to do reads no input
            result.actions[path.name] = ("skip", "")
            continue
        joined = _item(cfg, run, path).output.exists()  # items beside a joined output are a killed joiner's
        index = indexes.get(path.name) or index_of(path, reader_of(cfg))
        items = [] if joined else listed.get(path.name, [])
        action, why = _decide(cfg, run, path, items, index)
        result.actions[path.name], result.indexes[path.name] = (action, why), index
        if action == "refuse":
            result.refused.append(why)
        if action in ("refuse", "skip"):
            continue
        covered, kept = _ranges(cfg, run, path, items, action, result)
        found = [piece for piece in (piece_of(index, start, stop) for start, stop in kept) if piece.lines]
        open_lines = gaps_of(index, covered)
        fixed, gaps = fixed + found, gaps + open_lines
        if found or open_lines:
            result.pending.add(path.name)
    result.shares = deal(fixed, gaps, weights)
    return result


def _item(cfg: DictConfig, run: RunDir, path: Path) -> Item:
    return run.spread_item(path, outputs.format_of(cfg) == OutputFormat.text)


def _finished(cfg: DictConfig, run: RunDir, path: Path) -> bool:
    """A joined output with nothing to do, told from its sidecar and the input's size and mtime alone."""
    item = _item(cfg, run, path)
    sidecar = read_sidecar(item.ledger) if item.output.exists() else None
    locates = reader_of(cfg).locates_changes
    return sidecar is not None and decide(item, sidecar, str(cfg.rerun_epoch), _policy(cfg), lambda: 0, None,
                                          locates)[0] == "skip"


def _decide(cfg: DictConfig, run: RunDir, path: Path, items, index: FileIndex) -> Tuple[str, str]:
    policy, epoch, text = _policy(cfg), str(cfg.rerun_epoch), outputs.keeps_ledger(cfg)
    item = _item(cfg, run, path)
    sidecar = read_sidecar(item.ledger)
    if not item.output.exists() and not items:
        return "fresh", ""
    if sidecar is None and item.output.exists():  # (planned as fresh, it was answered again in full)
        return "adopt", "a joined output without its sidecar: its records kept as they are"
    if sidecar is None:
        return "resume", "answered by a runner without fingerprints: kept as it is"
    if items and not item.output.exists():  # decide asks the ledger whether anything was answered: a part was
        item = Item(item.input, item.output, run.piece(path.name, *items[0]))
    last = lambda: max((max(scan(run.piece(path.name, a, b, s)), default=0) for a, b, s in items), default=0)
    action, why = decide(item, sidecar, epoch, policy, last, index.print, reader_of(cfg).locates_changes)
    if action == "resume" and item.output.exists():
        return "skip", ""
    if action == "reopen" and text and not _item(cfg, run, path).ledger.exists():  # an older runner's join kept
        log.warning("%s: %s, but its output is rendered (output.format=%s) and its records were not kept; a new "
                    "run_name answers them", path.name, why, outputs.format_of(cfg).name)
        return "skip", ""
    return action, why


def _ranges(cfg: DictConfig, run: RunDir, path: Path, items, action: str,
            result: Plan) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """(the ranges answered or kept, the ranges whose ledger a rank continues: every ledger, and under
    rerun=errors the finished items with ERROR records). A reopened joined output is the range of the lines it
    had: continued when it has ERROR records to answer again (rerun=errors), else kept as a finished item."""
    policy = _policy(cfg)
    if action in ("fresh", "restart"):
        return [], []
    if action == "adopt":
        return _adopted(cfg, run, path, result)
    if action == "reopen":
        sidecar = read_sidecar(_item(cfg, run, path).ledger)
        # the records it holds: the lines of a text file as fingerprinted, or (rows) the records it has
        stop = (sidecar.input.lines if reader_of(cfg).locates_changes else sidecar.answered) + 1
        retry = policy.retries_errors and bool(sidecar.errors)
        result.reopened[path.name] = (stop, "log" if retry else "done")
        return [(1, stop)], [(1, stop)] if retry else []
    retry = ("log", "errors") if policy.retries_errors else ("log",)
    return [(a, b) for a, b, _ in items], [(a, b) for a, b, state in items if state in retry]


def _adopted(cfg: DictConfig, run: RunDir, path: Path, result: Plan):
    """A joined output without its sidecar (removed by hand): nothing says which input it was answered from, so
    its records are taken as they are, the range of the lines they hold becoming a ledger that a rank continues
    (the lines it lacks, and under rerun=errors its ERROR lines, are answered; none again). One read of it."""
    item = _item(cfg, run, path)
    records = item.ledger if outputs.keeps_ledger(cfg) else item.output
    stop = max(scan(records), default=0) + 1 if records.exists() else 1
    if stop == 1:  # no record to keep (or a rendered output whose records were not kept): answered afresh
        result.actions[path.name] = ("restart", "a joined output without its sidecar or records")
        return [], []
    result.reopened[path.name] = (stop, "log")
    return [(1, stop)], [(1, stop)]


def apply(cfg: DictConfig, run: RunDir, planned: Plan, files: List[Path]) -> None:
    """Bring out/ in line with the plan (restarted files forgotten, reopened outputs back to ledgers, sidecars
    with the fingerprint the ranks answer against) and write work.json. A dry run does it all too: its script
    (job.yaml, rewritten with this plan's epoch, and work.json) is run by hand, and ranks answering items that
    out/ does not hold as planned would double lines (a retried ERROR item beside its old file) or never be
    joined (no sidecar)."""
    if planned.refused:
        more = f" (and {len(planned.refused) - _LISTED} more)" if len(planned.refused) > _LISTED else ""
        raise ConfigError(f"{'; '.join(planned.refused[:_LISTED])}{more}: its records would no longer match its "
                          "lines; rerun=changed answers such files again from the start (or restore them)")
    _apply_files(cfg, run, planned, files)
    paths = sorted({p.path for share in planned.shares for p in share})
    number = {path: k for k, path in enumerate(paths)}  # each path once: 24k ranks read this file
    ends = {name: index.end for name, index in planned.indexes.items()}  # where each file's records end
    work = {"epoch": str(cfg.rerun_epoch), "files": paths, "ends": ends,
            "shares": [[[number[p.path], p.start, p.stop, p.offset, p.lines] for p in share]
                       for share in planned.shares]}
    atomic.write_json(run.work_file, work)


def _apply_files(cfg: DictConfig, run: RunDir, planned: Plan, files: List[Path]) -> None:
    # a joiner or a rank SIGKILLed while it wrote left its temp file (a joined output's is as big as the output):
    # no writer of the run is alive while its launch holds the lock and its ranks have not started
    removed = sum(atomic.remove_temps(folder) for folder in (run.out, run.parts, run.stats))
    if removed:
        log.info("removed %d temp file(s) that killed writers left in %s", removed, run.out)
    listed = run.pieces()
    for path in files:  # what a joiner killed after its rename left
        if path.name in listed and _item(cfg, run, path).output.exists():
            _remove(run, path.name, listed[path.name])
    join_finished(cfg, run, [path for path in files if path.name not in planned.pending])
    join_gone(cfg, run, files)
    listed = run.pieces()
    for path in files:
        action, why = planned.actions[path.name]
        if why:
            log.info("%s: %s", path.name, why)
        if action == "skip":  # a joined output whose Parquet copy is missing (output.parquet=true set since)
            outputs.complete(cfg, _item(cfg, run, path))
        else:
            _apply_file(cfg, run, path, action, listed.get(path.name, []), planned.indexes[path.name],
                        planned.reopened.get(path.name))


def _apply_file(cfg: DictConfig, run: RunDir, path: Path, action: str, items, index: FileIndex,
                reopened: Optional[Tuple[int, str]]) -> None:
    item, policy = _item(cfg, run, path), _policy(cfg)
    if action == "restart":
        for start, stop, state in items:
            run.piece(path.name, start, stop, state).unlink(missing_ok=True)
            run.journal(path.name, start, stop).unlink(missing_ok=True)
        item.output.unlink(missing_ok=True)
        item.ledger.unlink(missing_ok=True)  # a rendered output's kept records
    if action in ("reopen", "adopt"):  # a ledger again (its ERROR records answered again), else a finished item
        os.makedirs(run.parts, exist_ok=True)
        rendered = outputs.keeps_ledger(cfg)  # its records are the kept ledger, not the output
        os.replace(item.ledger if rendered else item.output, run.piece(path.name, 1, *reopened))
        if rendered:
            item.output.unlink()
    retry = ("errors",) if policy.retries_errors else ()
    for start, stop, state in items:
        if state in retry:
            os.replace(run.piece(path.name, start, stop, state), run.piece(path.name, start, stop, "log"))
    write_sidecar(item.ledger, Sidecar(str(cfg.rerun_epoch), config_print(cfg), index.print))


def share_of(run: RunDir, rank: int) -> List[Piece]:
    """The work items of one rank (one read of work.json)."""
    work = json.loads(run.work_file.read_text())
    shares, paths = work["shares"], work["files"]
    return [Piece(paths[k], *rest) for k, *rest in shares[rank]] if rank < len(shares) else []


def join_finished(cfg: DictConfig, run: RunDir, files: List[Path], dry: bool = False) -> List[str]:
    """Join every file whose finished items cover all its lines (`dry`: only say which); their names."""
    listed, ends = run.pieces(), _ends(run)
    return [path.name for path in files if _join_one(cfg, run, path, listed.get(path.name, []), ends, dry)]


def join_gone(cfg: DictConfig, run: RunDir, files: List[Path]) -> None:
    """Join the finished items of inputs no longer among `files` (the job's inputs): removed or renamed after
    their ranks answered them and before the join, their answers were left in out/parts/, read by nothing. A
    JSONL output needs only the records (the input is not read; its Parquet copy waits for the input to come
    back); a rendered one, or a file with lines left, stays in out/parts/ for the input's return, told in one
    line. Back unchanged under its name, a joined input is not answered again."""
    names, ends = {path.name for path in files}, _ends(run)
    for name, items in run.pieces().items():
        if name in names:
            continue
        gone = Path(run.root, name)  # (never opened: only its name is used)
        if outputs.keeps_ledger(cfg) or not _join_one(cfg, run, gone, items, ends, False, gone=True):
            if not _item(cfg, run, gone).output.exists():
                log.warning("%s: out/parts/ holds answers of it, but it is not among input.path's files any more: "
                            "kept there; bring it back under its name to finish and join it", name)


def _join_one(cfg: DictConfig, run: RunDir, path: Path, items, ends: Dict[str, int], dry: bool,
              gone: bool = False) -> bool:
    """Join one file's items when they are finished and cover all its lines (`dry`: only say so)."""
    sidecar = read_sidecar(_item(cfg, run, path).ledger)
    if items and _item(cfg, run, path).output.exists():  # left by a joiner killed before it removed them
        if not dry:
            _remove(run, path.name, items)
        return False
    end = ends.get(path.name) or (sidecar.input.lines + 1 if sidecar and reader_of(cfg).locates_changes else 0)
    if sidecar is None or not items or not end or not _covers(items, end):
        return False
    return dry or _join(cfg, run, path, items, sidecar, gone)


def _ends(run: RunDir) -> Dict[str, int]:
    """Where each input's records ended when the last launch planned them (work.json)."""
    try:
        return json.loads(run.work_file.read_text()).get("ends", {})
    except (FileNotFoundError, ValueError):
        return {}


def _covers(items, end: int) -> bool:
    """Whether finished items cover every record before `end`."""
    at = 1
    for start, stop, state in items:
        if state == "log" or start > at:
            return False
        at = max(at, stop)
    return at >= end


def _join(cfg: DictConfig, run: RunDir, path: Path, items, sidecar: Sidecar, gone: bool = False) -> bool:
    item, answered, errors = _item(cfg, run, path), 0, []
    reader, rendered = reader_of(cfg), outputs.keeps_ledger(cfg)
    # the renderers and the Parquet column types need the input's entries (chat or completion, id types): each
    # streams them (a file of millions of lines is not held), the renderer alongside the records in line order
    render = outputs.renderer(cfg, reader.read(path)) if rendered else None
    try:
        with (atomic.replacing(item.output) as out, _kept(item, rendered) as keep,
              _sink(cfg, item, reader.read(path), not gone) as add):
            for start, stop, state in items:
                with open(run.piece(path.name, start, stop, state), "r", encoding="utf-8") as part:
                    answered += _copy(part, out, errors, render, add, keep)
            sidecar.answered, sidecar.errors = answered, sorted(errors)
            write_sidecar(item.ledger, sidecar)  # the counts before the output: a reader of both sees them
    except FileNotFoundError:  # another joiner took them away: it has joined the file
        return False
    _remove(run, path.name, items)
    log.info("%s: joined %d work items into %s (%d records)", path.name, len(items), item.output, answered)
    return True


@contextmanager
def _kept(item: Item, rendered: bool):
    """A rendered output's records, kept as its ledger (renamed into place before the output is): a rerun reopens
    them to answer lines appended to the input or to retry ERROR records; else None."""
    if not rendered:
        yield None
        return
    with atomic.replacing(item.ledger) as keep:
        yield keep


@contextmanager
def _sink(cfg: DictConfig, item: Item, entries, wanted: bool = True):
    """The Parquet copy's writer (output.parquet=true), fed each joined record; else a no-op. `entries`: the
    input's, streamed once for the id columns' types."""
    if not (wanted and outputs.wants_parquet(cfg)):
        yield None
        return
    from runner.output_parquet import ParquetSink
    from runner.run_dir import parquet_of

    with ParquetSink(parquet_of(item.output), outputs.id_types(entries), cfg.output.parquet_rows) as sink:
        yield sink.add


def _copy(part, out, errors: List[int], render, add, keep) -> int:
    """Copy one finished item's records (line order already), rendered unless the output is the records (then
    the records go to `keep` too); the ERROR lines are noted. Returns the records."""
    count = 0
    for raw in part:
        count += 1
        if keep is not None:
            keep.write(raw)
        record = json.loads(raw) if render is not None or add is not None or '"ERROR"' in raw else None
        if record is not None and is_error(record):
            errors.append(line_of(record))
        out.write(raw if render is None else render(record) + "\n")
        if add is not None:
            add(record)
    return count


def _remove(run: RunDir, name: str, items) -> None:
    for start, stop, state in items:
        run.piece(name, start, stop, state).unlink(missing_ok=True)


def previous_rate(run: RunDir) -> Optional[float]:
    """The generation tokens/s of the run's last summary, if it has one."""
    try:
        return float(json.loads(run.summary_file.read_text())["generation_tokens_per_s"]) or None
    except (FileNotFoundError, KeyError, ValueError):
        return None
