"""Append-only JSONL of finished records, keyed by input line: the resume ledger of one input file.

Each append is flushed as it is written, so a killed process keeps what it finished, and fsynced at most every
`sync_every_s` seconds (0: every append), so a crashed node loses at most that much. A torn
last line (killed mid-write) is cut off on reopen. `finalize` writes the complete output atomically
(temp file, then rename), sorted by line and with each line once, then removes the log.
"""

import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, KeysView, List, Optional


class RecordLog:
    def __init__(self, path: Path, sync_every_s: Optional[float] = 0.0):
        """sync_every_s=None: flush to the OS only (survives a killed process, not a crashed node)."""
        self.path = Path(path)
        self.sync_every_s = sync_every_s
        self._records: Dict[int, dict] = self._recover()
        self._file = None
        self._synced = time.monotonic()

    def _recover(self) -> Dict[int, dict]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        good = data[: data.rfind(b"\n") + 1]
        if len(good) != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(len(good))
        records = (json.loads(line) for line in good.splitlines() if line.strip())
        return {r["line"]: r for r in records}

    def done(self) -> KeysView[int]:
        """Line numbers already answered (a live view: no copy, O(1) membership)."""
        return self._records.keys()

    def records(self) -> List[dict]:
        return [self._records[n] for n in sorted(self._records)]

    def append(self, records: Iterable[dict]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        for record in records:
            if record["line"] in self._records:
                continue
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._records[record["line"]] = record
        self._file.flush()
        if self.sync_every_s is not None and time.monotonic() - self._synced >= self.sync_every_s:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def finalize(self, out_path: Path, render: Callable[[dict], str]) -> None:
        """Write every record once, in line order, to out_path (atomically); drop the log."""
        self.close()
        tmp = out_path.with_name(out_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for record in self.records():
                f.write(render(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
        self.path.unlink(missing_ok=True)


def as_jsonl(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def as_original_text(record: dict) -> str:
    """The original per-tile script's line format."""
    return f"Prompt: {record['prompt']!r}, Generated text: {record['text']!r}"
