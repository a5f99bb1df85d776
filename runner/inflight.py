"""A work item's in-flight journal, out/parts/<input>.<a>-<b>.inflight: before each top-up of its engine a rank
appends the line numbers it puts in flight (one append per item per top-up, not per line), so when the rank
itself dies under a line (an engine core in the rank's process, VLLM_ENABLE_V1_MULTIPROCESSING=0, takes the
rank with it) the next run knows the lines in flight then: those still without a record are suspects.

Each entry has the lines and how alone they were in the engine: MIXED (a top-up of the stream), GROUP (a group
of suspects with nothing else in flight), ALONE (one line, nothing else). A suspect is put in flight one level
more alone than it last died at: the lines of a mixed top-up together as a group, those of a group one at a time;
one that died ALONE gets an ERROR record without an engine. So a poison line ends as an ERROR record by the third
rerun at most, and a rank killed for other reasons (a node lost, preemption) costs its rerun one batch drained
alone. Removed when the item finishes. Written only while the engine core runs in the rank's process: a core
of its own dies alone and is restarted in the run (runner/engine_watch.py), so beside one a rank's death is no
line's fault, and an item then costs the shared filesystem one failed open of its journal per run."""

import json
from pathlib import Path
from typing import Dict, Iterable, List

MIXED, GROUP, ALONE = 0, 1, 2


class Journal:
    def __init__(self, path: Path):
        # _there: the file is known to exist (read or written by this run): only then is it removed, so an item
        # with no journal (an engine core of its own writes none) costs the shared filesystem no unlink
        self.path, self._file, self._there = Path(path), None, False

    def died(self, answered) -> Dict[int, int]:
        """line -> the level it was last put in flight at, for the journaled lines `answered(line)` says have no
        record (a torn last entry, the rank killed mid-append, is left out)."""
        levels: Dict[int, int] = {}
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return levels
        self._there = True
        for line in raw.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # torn by a kill mid-append (the next run starts its appends on a line of their own)
                continue
            for start, stop in entry["lines"]:
                levels.update(dict.fromkeys(range(start, stop), entry["alone"]))
        return {number: level for number, level in levels.items() if not answered(number)}

    def append(self, numbers: Iterable[int], alone: int) -> None:
        """Flushed to the OS before the lines go in (a killed process keeps it; no fsync: a crashed node is no
        line's fault)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file, self._there = open(self.path, "ab"), True
            if self._file.tell() and not _ends_a_line(self.path):
                self._file.write(b"\n")  # after a torn entry
        self._file.write((json.dumps({"lines": _runs(numbers), "alone": alone}) + "\n").encode())
        self._file.flush()

    def remove(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._there:
            self.path.unlink(missing_ok=True)
            self._there = False


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _runs(numbers: Iterable[int]) -> List[List[int]]:
    """The line numbers as [start, stop) runs: a top-up is mostly consecutive lines (a few bytes, not 8 a line)."""
    runs: List[List[int]] = []
    for number in numbers:
        if runs and runs[-1][1] == number:
            runs[-1][1] += 1
        else:
            runs.append([number, number + 1])
    return runs


def groups(levels: Dict[int, int], entries: List) -> List[List]:
    """The suspects' entries as the groups to put in flight alone: those that died mixed as one group, those that
    died in a group one by one (ALONE ones are not here: they get their ERROR record)."""
    mixed = [entry for entry in entries if levels[entry.number] == MIXED]
    return ([mixed] if mixed else []) + [[entry] for entry in entries if levels[entry.number] == GROUP]
