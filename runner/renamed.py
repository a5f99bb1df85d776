"""Inputs renamed between launches (a.txt -> b.txt, the same bytes): the new name takes over the old one's answers,
so a folder of millions of answered lines renamed is not answered again. Outputs left without an input are told.

The launch (one process, under the run's lock) lists out/ once for the sidecars whose input is no longer among
the job's files; only then are candidates looked at: an input with nothing answered, of an orphan's size, whose
whole-file blake2b (the launch's pass has it for a spread text file, else the file is read once) is the one its
answers were made from, under the run's answer set. The old output's records are rewritten with the new file
name (one read and write of it, no line answered), then its sidecar moves: a launch killed between the two
finds the new output adopted as it is (no sidecar) and the old one told as left over; nothing answered twice.
"""

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig

from runner import atomic, outputs
from runner.fingerprint import InputPrint, read_sidecar, scan, write_sidecar
from runner.readers import reader_of
from runner.records import FILE
from runner.run_dir import Item, RunDir, parquet_of, renamed, sidecar_of

log = logging.getLogger(__name__)

_LISTED = 5


def adopt_renamed(cfg: DictConfig, run: RunDir, items: List[Item], prints: Dict[str, InputPrint]) -> None:
    """Give fresh inputs with an orphan's bytes its answers; tell, in one line, the orphans left (kept)."""
    names, listed = {item.input.name for item in items}, run.out_names()
    orphans = [name for name in run.sidecar_names(listed) if name not in names]
    if not orphans or not items:
        return
    found = {name: (renamed(items[0], name), read_sidecar(renamed(items[0], name).ledger))
             for name in orphans if renamed(items[0], name) is not None}
    found = {name: (old, sidecar) for name, (old, sidecar) in found.items() if sidecar and old.output.exists()}
    # (not fresh: an input with anything in out/ or work items in out/parts/; told from two listings, no stat
    # per input file)
    busy = set(listed) | {sidecar_of(run.out / name).name for name in run.pieces()}
    for item in items:
        twin = _twin(cfg, item, found, prints, busy)
        if twin is not None:
            _move(cfg, *twin, item)
            found.pop(twin[0].input.name)
    if found:
        listed = ", ".join(str(old.output) for old, _ in list(found.values())[:_LISTED])
        more = f" (and {len(found) - _LISTED} more)" if len(found) > _LISTED else ""
        log.warning("%d output(s) have no input any more: %s%s; kept as they are (bring the input back, or move "
                    "them away)", len(found), listed, more)


def _twin(cfg: DictConfig, item: Item, found, prints: Dict[str, InputPrint],
          busy) -> Optional[Tuple[Item, InputPrint]]:
    """The orphan whose answers were made from this fresh input's bytes, under this run's answer set, and the
    input's fingerprint."""
    if busy.intersection([item.output.name, item.ledger.name, sidecar_of(item.ledger).name]):
        return None
    try:
        size = item.input.stat().st_size
    except OSError:  # gone since it was listed
        return None
    same = [old for old, sidecar in found.values() if sidecar.input.size == size and sidecar.answered is not None
            and sidecar.epoch == str(cfg.rerun_epoch)]
    if not same:
        return None
    now = prints.get(item.input.name) or scan(item.input, by_lines=reader_of(cfg).locates_changes)
    return next(((old, now) for old in same if found[old.input.name][1].input.blake2b == now.blake2b), None)


def _move(cfg: DictConfig, old: Item, now: InputPrint, new: Item) -> None:
    rendered = outputs.keeps_ledger(cfg)  # its records are the kept ledger; the rendered output names no file
    _rewrite(old.ledger if rendered else old.output, new.ledger if rendered else new.output, new.input.name)
    if rendered:
        old.output.replace(new.output)
    sidecar = read_sidecar(old.ledger)
    sidecar.input = now  # (its mtime: a rerun trusts an unchanged size and mtime)
    write_sidecar(new.ledger, sidecar)
    for path in (sidecar_of(old.ledger), old.output, old.ledger, parquet_of(old.output)):
        path.unlink(missing_ok=True)  # (a Parquet copy names the old file: written again for the new one)
    outputs.complete(cfg, new)
    log.info("%s: the same bytes as %s, renamed since it was answered: its answers are kept under the new name",
             new.input.name, old.input.name)


def _rewrite(source: Path, target: Path, name: str) -> None:
    """Copy the records, each naming the file `name` (whole or not at all)."""
    with open(source, "r", encoding="utf-8") as f, atomic.replacing(target) as out:
        for raw in f:
            if raw.strip():
                record = json.loads(raw)
                if FILE in record:
                    record[FILE] = name
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
