"""What a rerun does with each input file, so that the outputs reflect the inputs and the config as they are now.

Each output's sidecar (runner.fingerprint) holds the fingerprint of its input and the run's answer set
(`rerun_epoch` in job.yaml: a new one when the answer-shaping config changes under `rerun=all`). Per file:

- nothing answered yet: answered from the start (fresh)
- answered under another epoch: answered again from the start (restart)
- the input changed at or before its last answered line (edited, lines deleted: records would sit on other
  prompts): refused, or with `rerun=changed` (or `all`) answered again from the start
- lines appended, or (`rerun=errors`, the default) lines whose newest record is an ERROR: a finished output is
  reopened (its records go back into the ledger) and those lines are answered; a ledger is continued (resume)
- else nothing to do (skip)
"""

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Callable, List, Optional, Set, Tuple

from omegaconf import DictConfig

from runner import job, outputs
from runner.errors import ConfigError
from runner.fingerprint import (InputPrint, Sidecar, answered_as_it_is, changed_from, config_print, differing,
                                read_sidecar, scan, unchanged, write_sidecar)
from runner.mode import mode_of
from runner.readers import Entry, reader_of
from runner.run_dir import Item, RunDir  # noqa: F401  (Item: re-exported)
from runner.record_log import RecordLog
from runner.schema import RerunPolicy

log = logging.getLogger(__name__)

_LISTED = 5


def _policy(cfg: DictConfig) -> RerunPolicy:
    return RerunPolicy[str(getattr(cfg.rerun, "name", cfg.rerun))]


def _change(stored: InputPrint, path: Path, now: Optional[InputPrint], locates: bool) -> Tuple[Optional[int], bool]:
    """(first line that may have changed or None, whether the file grew). Without `now` (the file not read
    yet) an unchanged size and mtime are trusted, so a rerun with nothing to do reads no input. A format whose
    changes cannot be located (`locates` False: Parquet) changed at its first record."""
    if now is None and unchanged(stored, path):
        return None, False
    if now is not None and now.blake2b == stored.blake2b:
        return None, False
    size = now.size if now is not None else path.stat().st_size
    line = changed_from(stored, path)
    return (line if locates or line is None else 1), size > stored.size


def decide(item: Item, sidecar: Optional[Sidecar], epoch: str, policy: RerunPolicy,
           last_answered: Callable[[], int], now: Optional[InputPrint] = None,
           locates: bool = True) -> Tuple[str, str]:
    """(action, why): action is fresh, adopt, restart, refuse, resume, reopen or skip (see the module doc)."""
    finished = item.output.exists()
    if not finished and not item.ledger.exists():
        return "fresh", ""
    if sidecar is None:
        return "adopt", "answered by a runner without fingerprints: kept as it is"
    if sidecar.epoch != epoch:
        return "restart", "answered under another config (or before rerun=all)"
    line, grew = _change(sidecar.input, item.input, now, locates)
    if line is not None and line <= (sidecar.input.lines if finished else last_answered()):
        if policy in (RerunPolicy.changed, RerunPolicy.all):
            return "restart", f"changed at or before line {line} (rerun={policy.name})"
        return "refuse", f"{item.input.name} changed at or before line {line} since it was answered"
    if not finished:
        return "resume", ""
    if line is not None or grew or (policy.retries_errors and sidecar.errors):
        return "reopen", "lines appended" if line is not None or grew else f"{len(sidecar.errors)} ERROR records"
    return "skip", ""


def left_alone(cfg: DictConfig, run: RunDir, items: List[Item]) -> Set[Path]:
    """The inputs a rerun leaves as they are (decide's "skip" under the previous job.yaml's epoch), told from
    sidecars and stats alone: the input is not read while its size and mtime are the ones it was answered with.
    The launch need not read them (a folder of 10k answered files and one new one)."""
    policy, previous = _policy(cfg), previous_job(cfg, run)
    if policy == RerunPolicy.all or previous is None:
        return set()
    epoch, locates = str(previous.get("rerun_epoch", "")), reader_of(cfg).locates_changes
    kept = set()
    for item in items:
        sidecar = read_sidecar(item.ledger) if item.output.exists() else None
        # (the stat first: decide would read a changed input to find where it changed)
        if (answered_as_it_is(item, sidecar)
                and decide(item, sidecar, epoch, policy, lambda: 0, None, locates)[0] == "skip"):
            kept.add(item.input)
    return kept


def previous_job(cfg: DictConfig, run: RunDir) -> Optional[DictConfig]:
    """The job.yaml the run's last launch wrote (None: a fresh run). A spoiled one is refused (ConfigError): read
    without its rerun_epoch, every answered file was answered again. rerun=all, which answers every line again
    anyway, needs none."""
    if not run.job_file.is_file():
        return None
    try:
        previous = job.read(run.job_file, needs=("mode", "model"))  # (what config_print needs)
        if "rerun_epoch" not in previous and run.has_sidecars():  # (an older runner's wrote no sidecars either)
            raise job.spoiled(run.job_file, "no rerun_epoch")
    except ConfigError as e:
        if _policy(cfg) != RerunPolicy.all:
            raise
        log.warning("%s; rerun=all: every line is answered again", e)
        return None
    return previous


def _last_answered(ledger: Path) -> int:
    from runner.record_log import scan

    return max(scan(ledger), default=0) if ledger.exists() else 0


def check_launch(cfg: DictConfig, run: RunDir, previous: Optional[DictConfig]) -> str:
    """Before job.yaml is rewritten: refuse (ConfigError, one line naming the fix) a rerun whose answer-shaping
    config changed without rerun=all, or whose inputs changed before their answered lines without
    rerun=changed. Returns the run's epoch: the previous one, or a new one (a fresh run, a changed config
    under rerun=all, or rerun=all)."""
    policy = _policy(cfg)
    before = _answered_with(run, previous) if policy != RerunPolicy.all else None
    if (previous is None and before is None) or not (run.out.is_dir() and any(run.out.iterdir())):
        return new_epoch()
    changed = differing(before[0] if before else config_print(previous), config_print(cfg))
    if changed and policy != RerunPolicy.all:
        raise ConfigError(f"{run.root} was answered with other {', '.join(changed[:_LISTED])}: rerun=all answers "
                          "every line again with the config as it is now, or a new run_name=... starts a separate run")
    if changed or policy == RerunPolicy.all:
        return new_epoch()
    epoch, locates = before[1], reader_of(cfg).locates_changes
    refused = [why for item in mode_of(cfg).work_items(run)
               for action, why in [decide(item, read_sidecar(item.ledger), epoch, policy,
                                          lambda item=item: _last_answered(item.ledger), locates=locates)]
               if action == "refuse"]
    if refused:
        more = f" (and {len(refused) - _LISTED} more)" if len(refused) > _LISTED else ""
        raise ConfigError(f"{'; '.join(refused[:_LISTED])}{more}: its records would no longer match its lines; "
                          "rerun=changed answers such files again from the start (or restore them)")
    return epoch


def _answered_with(run: RunDir, previous: Optional[DictConfig]) -> Optional[Tuple[dict, str]]:
    """(the answer-shaping config, the epoch) of the run's outputs: job.yaml's; with job.yaml gone (removed by
    hand: read as a fresh run, every answered file was answered again), the one its sidecars share (one read
    each, once). None: nothing answered yet."""
    if previous is not None:
        return config_print(previous), str(previous.get("rerun_epoch", ""))
    # only the sidecars of answered files: a first launch stopped before it wrote job.yaml left sidecars of
    # files with nothing answered, which bind no config
    pieces, sidecars = run.pieces(), []
    for name in run.sidecar_names():
        ledger = run.file_item(Path(name)).ledger
        sidecar = read_sidecar(ledger)
        if sidecar is not None and (sidecar.answered is not None or name in pieces or ledger.exists()):
            sidecars.append(sidecar)
    sets = {(s.epoch, json.dumps(s.config, sort_keys=True)) for s in sidecars}
    if not sets:
        return None
    if len(sets) > 1:
        raise ConfigError(f"{run.job_file} is gone and the sidecars in {run.out} hold {len(sets)} answer sets: "
                          "restore it, or rerun=all answers every line again (or a new run_name=... starts a "
                          "separate run)")
    log.warning("%s is gone: the run's config and answer set are taken from its %d sidecar(s)", run.job_file,
                len(sidecars))
    epoch, config = next(iter(sets))
    return json.loads(config), epoch


def new_epoch() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def _drop(item: Item) -> None:
    """Forget a file's answers (the ledger first: a finished output alone is never resumed as a ledger)."""
    item.ledger.unlink(missing_ok=True)
    item.output.unlink(missing_ok=True)


def reopen_finished(cfg: DictConfig, items: List[Item]) -> None:
    """server_per_node, host 0 before its queue starts: finished files with work to do become ledgers again
    (or are dropped, to be answered again), so that any host of the job can claim them. Reads only sidecars
    and stats, and an input only when its size or mtime changed."""
    policy, epoch, locates = _policy(cfg), str(cfg.rerun_epoch), reader_of(cfg).locates_changes
    for item in items:
        if not item.output.exists():
            continue
        action, why = decide(item, read_sidecar(item.ledger), epoch, policy, lambda: 0, locates=locates)
        if action == "refuse":
            raise ConfigError(f"{why}: rerun=changed answers it again from the start (or restore it)")
        if action == "skip":
            outputs.complete(cfg, item)  # no host is handed a finished file
        if action in ("restart", "reopen"):
            log.info("%s: %s; answering %s", item.input.name, why, "it again" if action == "restart" else "the rest")
            if action == "restart":
                _drop(item)
            else:
                _reopen(cfg, item)


def _reopen(cfg: DictConfig, item: Item) -> None:
    """A finished output becomes a ledger again (the queue hands out a file with no finished output): its records
    go back into the ledger, or a rendered output's kept ledger is all that is left."""
    if not outputs.keeps_ledger(cfg):
        os.replace(item.output, item.ledger)
    elif item.ledger.exists():
        item.output.unlink()
    else:
        log.warning("%s: its rendered output has no ledger to add lines to; a new run_name answers them",
                    item.input.name)


def begin(cfg: DictConfig, item: Item, sync_every_s: Optional[float]) -> Tuple[List[Entry], Optional[RecordLog]]:
    """Fingerprint the input, read its entries through the job's reader and bring its output in line with it: the
    entries, and the ledger to answer into (None: nothing to do). Raises ConfigError for a changed file under
    rerun=errors."""
    reader = reader_of(cfg)
    now = scan(item.input, by_lines=reader.locates_changes)  # first: a line appended after it waits for a rerun
    lines = list(reader.read(item.input, stop=now.lines + 1 if reader.locates_changes else None))
    sidecar, ledger = read_sidecar(item.ledger), None
    if item.ledger.exists() and not item.output.exists():
        ledger = RecordLog(item.ledger, sync_every_s=sync_every_s)
    policy = _policy(cfg)
    action, why = decide(item, sidecar, str(cfg.rerun_epoch), policy,
                         lambda: max(ledger.done(), default=0) if ledger else 0, now, reader.locates_changes)
    if action == "refuse":
        raise ConfigError(f"{why}: rerun=changed answers it again from the start (or restore it)")
    if why:
        log.info("%s: %s", item.input.name, why)
    if action == "skip" or (action == "adopt" and item.output.exists()):
        outputs.complete(cfg, item, lines)
        return lines, None
    if action == "restart":
        if ledger is not None:
            ledger.close()
        _drop(item)
        ledger = None
    if action == "reopen" and not outputs.keeps_ledger(cfg):
        os.replace(item.output, item.ledger)  # its records are the ledger's; the final output is written again
    elif action == "reopen" and not item.ledger.exists():
        log.warning("%s: %s, but its rendered output has no ledger to add them to; a new run_name answers them",
                    item.input.name, why)
        return lines, None
    write_sidecar(item.ledger, Sidecar(str(cfg.rerun_epoch), config_print(cfg), now))  # before any new record
    return lines, ledger or RecordLog(item.ledger, sync_every_s=sync_every_s)


def todo(lines: List[Entry], ledger: RecordLog, cfg: DictConfig) -> List[Entry]:
    """The entries still to answer: no record yet, or (rerun=errors) only ERROR records."""
    retry = _policy(cfg).retries_errors
    return [line for line in lines if ledger.needs(line.number, retry)]


def finish(cfg: DictConfig, item: Item, lines: List[Entry], ledger: RecordLog) -> bool:
    """Write the finished output once every line has a record, in output.format (runner/outputs.py; the sidecar
    first gets the output's counts, so a rerun and runner.progress need not read the output). False: lines are
    left for a rerun."""
    if not all(line.number in ledger.done() for line in lines):
        ledger.close()
        return False
    sidecar = read_sidecar(item.ledger)
    sidecar.answered, sidecar.errors = len(ledger.done()), sorted(ledger.errors())
    write_sidecar(item.ledger, sidecar)
    outputs.write(cfg, item, lines, ledger)  # a rendered output cannot be read back: its ledger is kept
    return True
