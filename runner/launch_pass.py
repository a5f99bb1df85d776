"""The launch's one pass over each input file: millions of lines on a filesystem every user shares are read once
at launch, not once per check. The job's reader reads a file's entries and feeds every raw line it reads to the
file's spread index (runner.work_items.Indexer); the entries' prompts go to the pre-flight token count
(runner.preflight), and what the pass met (a missing file, a line that is not UTF-8, no record) is the
validation. Neither the index nor the count reads an input at launch itself.

A binary format (Parquet) feeds no index: its reader asks the file's metadata whether it can be read, the pass
decodes the rows the count needs, and the spread plan fingerprints its bytes (runner.work_items.index_of). A
mode that does not spread its inputs (server_per_node, per_tile's by_rank) gets no index: its lines are not
hashed.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from omegaconf import DictConfig

from runner import inputs, preflight
from runner.mode import mode_of
from runner.readers import InputReader
from runner.work_items import FileIndex, Indexer


@dataclass
class Inputs:
    """What the pass gave: the pre-flight report (None: no tokenizer here) and the text files' indexes."""

    report: Optional[preflight.Report]
    # input file name -> its index (by the spread plan; none for a binary format)
    indexes: Dict[str, FileIndex] = field(default_factory=dict)


def read_inputs(cfg: DictConfig, reader: InputReader, files: List[Path]) -> Inputs:
    """Validate, count and index every input file in one read of each: one ConfigError lists every unusable
    file. The lines too long are the report's (runner.preflight.judge refuses them)."""
    problems = {path.name: f"{path}: missing" for path in files if not path.is_file()}
    present = [path for path in files if path.name not in problems]
    one = _Pass(cfg, reader, problems)
    report = preflight.count(cfg, present, one.prompts)  # asks only for the files it has not counted before
    for path in (path for path in present if path.name not in one.done):
        one.lines(path)  # not counted (unchanged since an earlier check, no tokenizer here) or cut short
    inputs.report([problems[path.name] for path in files if path.name in problems])
    return Inputs(report, one.indexes)


class _Pass:
    def __init__(self, cfg: DictConfig, reader: InputReader, problems: Dict[str, str]):
        self.mode, self.reader, self.problems = mode_of(cfg), reader, problems
        # a text file is indexed only for a mode that cuts it into ranges (hashing its lines costs CPU)
        self.index = reader.locates_changes and self.mode.spreads_inputs()
        self.indexes: Dict[str, FileIndex] = {}
        # the files read to their end (or found unusable)
        self.done: Set[str] = set()

    def prompts(self, path: Path) -> Iterator[Tuple[int, str]]:
        """The file's prompts for the count, read once: the index is fed as they are read."""
        indexer, records = self._start(path), [0]
        if path.name in self.done:
            return
        try:
            yield from self.mode.prompts(path, _counted(self.reader.read_all(path, indexer), records))
        except (inputs.BadText, OSError) as e:
            return self._unusable(path, e)
        self._finish(path, records[0], indexer)

    def lines(self, path: Path) -> None:
        """A file the count does not ask for: its lines decoded (no entry built) and indexed."""
        indexer = self._start(path)
        if path.name in self.done or not self.reader.locates_changes:  # (a binary file: its metadata told)
            return self.done.add(path.name)
        try:
            records = self.reader.count(path, indexer)
        except (inputs.BadText, OSError) as e:
            return self._unusable(path, e)
        self._finish(path, records, indexer)

    def _start(self, path: Path) -> Optional[Indexer]:
        """The file's indexer (None: not indexed); a binary file's problem is told by its metadata, no pass."""
        problem = "" if self.reader.locates_changes else self.reader.problem(path)
        if problem:
            self.problems[path.name] = problem
            self.done.add(path.name)
        return Indexer() if self.index else None

    def _unusable(self, path: Path, error: Exception) -> None:
        """Not UTF-8 (or its lines end in CR alone), or unreadable (gone since it was listed, no permission): one
        line among the problems."""
        unreadable = f"{path}: cannot be read ({error})"
        self.problems[path.name] = str(error) if isinstance(error, inputs.BadText) else unreadable
        self.done.add(path.name)

    def _finish(self, path: Path, records: int, indexer: Optional[Indexer]) -> None:
        if not records and self.reader.locates_changes:
            self.problems[path.name] = f"{path}: empty (no record)"
        if indexer is not None:
            self.indexes[path.name] = indexer.finish(path)
        self.done.add(path.name)


def _counted(entries, records: List[int]):
    for entry in entries:
        records[0] += 1
        yield entry
