"""Append-only JSONL of finished records, keyed by input line: the resume ledger of one input file.

Each append is flushed as it is written, so a killed process keeps what it finished, and fsynced at most every
`sync_every_s` seconds (0: every append), so a crashed node loses at most that much. A torn
last line (killed mid-write) is cut off on reopen. `finalize` writes the complete output atomically
(temp file, then rename), sorted by line and with each line once, then removes the log.

The newest record of a line wins: a rerun that retries an ERROR record appends the new one, and `finalize`
writes that. A line that has a record other than an ERROR is never appended again (exactly once).

Only each line's byte offset in the log is held in memory (about 100 bytes a line, not the record: a million
answers of 1 KB took 4.7 GB per rank when the records were kept); `finalize` reads the records back in line order.
"""

import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, KeysView, Optional, Set

from runner import atomic
from runner.records import Record, is_error, line_of


class RecordLog:
    def __init__(self, path: Path, sync_every_s: Optional[float] = 0.0):
        """sync_every_s=None: flush to the OS only (survives a killed process, not a crashed node)."""
        self.path = Path(path)
        self.sync_every_s = sync_every_s
        self._offsets: Dict[int, int] = {}  # line number -> where its newest record starts in the log
        self._errors: Set[int] = set()  # lines whose newest record is an ERROR
        self._size = self._recover()
        self._file = None
        self._synced = time.monotonic()

    def _recover(self) -> int:
        """Index the records already in the log, cut a torn last line; returns the log's length."""
        if not self.path.exists():
            return 0
        good = 0
        with open(self.path, "r+b") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                if raw.strip():
                    self._index(json.loads(raw), good)
                good += len(raw)
            if f.seek(0, os.SEEK_END) != good:
                f.truncate(good)
        return good

    def _index(self, record: dict, offset: int) -> None:
        line = line_of(record)
        self._offsets[line] = offset
        if is_error(record):
            self._errors.add(line)
        else:
            self._errors.discard(line)

    def done(self) -> KeysView[int]:
        """Line numbers that have a record, ERROR or not (a live view: no copy, O(1) membership)."""
        return self._offsets.keys()

    def errors(self) -> Set[int]:
        """Line numbers whose newest record is an ERROR (a rerun retries them by default)."""
        return self._errors

    def needs(self, line: int, retry_errors: bool) -> bool:
        """Whether `line` is still to be answered: no record yet, or (retry_errors) only an ERROR one."""
        return line not in self._offsets or (retry_errors and line in self._errors)

    def records(self) -> Iterator[dict]:
        """Every record once, in line order, read back from the log."""
        if not self._offsets:
            return
        with open(self.path, "rb") as f:
            for line in sorted(self._offsets):
                f.seek(self._offsets[line])
                yield json.loads(f.readline())

    def append(self, records: Iterable[dict]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        for record in records:
            if line_of(record) in self._offsets and line_of(record) not in self._errors:
                continue  # answered already: never twice
            data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            self._file.write(data)
            self._index(record, self._size)
            self._size += len(data)
        self._file.flush()
        if self.sync_every_s is not None and time.monotonic() - self._synced >= self.sync_every_s:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def finalize(self, out_path: Path, render: Callable[[dict], str], keep_log: bool = False,
                 each: Optional[Callable[[dict], None]] = None) -> None:
        """Write every line's newest record once, in line order, to out_path (atomically); drop the log unless
        keep_log (an output a rerun cannot read back, e.g. the text format, keeps its records there). `each` is
        handed every record in the same pass (the Parquet copy)."""
        self.close()
        with atomic.replacing(out_path) as f:
            for record in self.records():
                f.write(render(record) + "\n")
                if each is not None:
                    each(record)
        if not keep_log:
            self.path.unlink(missing_ok=True)


def scan(path: Path) -> Dict[int, bool]:
    """Read-only (a live job's ledger is not touched): line -> whether its newest record is an ERROR, over the
    whole records of a ledger or a finished JSONL output (a torn last line is skipped)."""
    newest: Dict[int, bool] = {}
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n") and raw.strip():
                record = json.loads(raw)
                newest[line_of(record)] = is_error(record)
    return newest


def as_jsonl(record: dict) -> str:
    """The record in the one schema (a record an older runner left in a resumed ledger is brought up to it; this
    runner's records are in it already, and written as they are: finalize costs no more per record)."""
    if "response" not in record:
        record = Record.from_json(record).to_json()
    return json.dumps(record, ensure_ascii=False)


def as_original_text(record: dict) -> str:
    """The original per-tile script's line format (an ERROR record's answer is written as '')."""
    record = Record.from_json(record)
    return f"Prompt: {record.prompt!r}, Generated text: {record.response or ''!r}"
