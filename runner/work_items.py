"""per_tile's work items: the input files cut into line ranges (path, start, stop, offset) and dealt out to the
ranks so that each gets the same share of the lines (weighted by its engine's devices).

Made once per launch on the launching host, from the launch's one pass over each input (runner.launch_pass feeds
an Indexer the raw lines its reader reads for the pre-flight count and the validation): it fingerprints the file,
counts its lines and keeps a sparse index (every `_EVERY`-th physical line's number, byte
offset and the non-blank lines before it), from which any line's offset is found by reading fewer than `_EVERY`
lines. A rank then seeks to its range's offset and reads only its own lines.

A range is [start, stop) of physical line numbers (1-based, blank lines inside a range are skipped, never
answered). The ranges a rank gets are contiguous runs of the job's lines in file order, so 3 files over 48 ranks
gives each rank one or two ranges and one file over 12 ranks gives 12.
"""

import bisect
import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple

from runner.fingerprint import InputPrint, Scanner, scan

# physical lines between two entries of a file's sparse index (a lookup reads at most this many lines)
_EVERY = 256


@dataclass(frozen=True)
class Piece:
    """One work item: lines start <= number < stop of `path`; `offset` is the byte where line `start` begins."""

    path: str
    start: int
    stop: int
    offset: int
    # non-blank lines in it (its weight when shares are balanced)
    lines: int


@dataclass
class FileIndex:
    """What one pass over an input gives: its fingerprint, its non-blank lines, and where lines begin."""

    path: Path
    print: InputPrint
    lines: int = 0
    # per entry k: physical line k * _EVERY + 1, its byte offset, the non-blank lines before it
    offsets: List[int] = field(default_factory=list)
    before: List[int] = field(default_factory=list)
    # one past the last non-blank line: the records a file's work items must cover to be joined
    end: int = 1
    _file: Optional[BinaryIO] = field(default=None, repr=False)
    _found: Dict[int, Tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def last(self) -> int:
        """The physical lines of the file (the last line number)."""
        return self.print.lines

    def _walk(self, number: int):
        """(line number, offset, non-blank lines before it, raw line) from the index entry at or before
        `number` on."""
        k = min((number - 1) // _EVERY, len(self.offsets) - 1)
        current, offset, seen = k * _EVERY + 1, self.offsets[k], self.before[k]
        if self._file is None:  # one open per file, however many lookups (each open is a metadata request)
            self._file = open(self.path, "rb")
        self._file.seek(offset)
        while raw := self._file.readline():
            yield current, offset, seen, raw
            current, offset, seen = current + 1, offset + len(raw), seen + bool(raw.strip())
        yield current, offset, seen, b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _indexed(self, number: int) -> Optional[Tuple[int, int]]:
        """(offset, non-blank lines before it) of a line the index holds (an entry's or the one after the last),
        so that a file no range is cut inside is not opened again."""
        if number == self.last + 1:
            return self.print.size, self.lines
        k = (number - 1) // _EVERY
        return (self.offsets[k], self.before[k]) if number == k * _EVERY + 1 and k < len(self.offsets) else None

    def offset_of(self, number: int) -> int:
        """The byte at which line `number` begins (the file's size for the line after the last)."""
        if self._indexed(number) is not None:
            return self._indexed(number)[0]
        for current, offset, _, _ in self._walk(number):
            if current == number:
                return offset
        raise ValueError(f"{self.path} has no line {number}")

    def ordinal_of(self, number: int) -> int:
        """The non-blank lines before line `number`."""
        if number > self.last:
            return self.lines
        if self._indexed(number) is not None:
            return self._indexed(number)[1]
        for current, _, seen, _ in self._walk(number):
            if current == number:
                return seen
        return self.lines

    def number_of(self, ordinal: int) -> Tuple[int, int]:
        """(line number, byte offset) of the non-blank line that has `ordinal` non-blank lines before it (the
        line after the last, and the file's size, when there is none)."""
        if ordinal in self._found:  # one rank's stop is the next one's start
            return self._found[ordinal]
        k = max(bisect.bisect_right(self.before, ordinal) - 1, 0)
        for current, offset, seen, raw in self._walk(k * _EVERY + 1):
            if (seen == ordinal and raw.strip()) or not raw:
                self._found[ordinal] = current, offset
                return current, offset
        raise AssertionError("unreachable")


class RowIndex(FileIndex):
    """A format of rows, not lines (Parquet): record n is row n - 1, the reader finds rows from the file's own
    metadata (no offsets), and the fingerprint is of its bytes in blocks."""

    @property
    def last(self) -> int:
        return self.lines

    def offset_of(self, number: int) -> int:
        return 0

    def ordinal_of(self, number: int) -> int:
        return min(number, self.lines + 1) - 1

    def number_of(self, ordinal: int) -> Tuple[int, int]:
        return ordinal + 1, 0


def index_of(path: Path, reader) -> FileIndex:
    """The index of an input file as the job's reader reads it (text: by lines; else by rows)."""
    if reader.locates_changes:
        return index_file(path)
    rows = reader.count(path)
    return RowIndex(path, scan(path, by_lines=False), rows, end=rows + 1)


def index_file(path: Path) -> FileIndex:
    """Fingerprint and index a text file in one pass of its own (the launch feeds an Indexer from its pass)."""
    indexer = Indexer()
    with open(path, "rb") as f:
        for raw in f:
            indexer.add(raw)
    return indexer.finish(path)


class Indexer:
    """Fed every raw line of a text file as it is read (the launch's one pass, runner.launch_pass); builds its
    FileIndex without reading the file itself."""

    def __init__(self):
        self.scanner, self.offsets, self.before = Scanner(), [], []
        self.number, self.seen, self.offset, self.end = 0, 0, 0, 1

    def add(self, raw: bytes) -> None:
        self.number += 1
        if self.number % _EVERY == 1:
            self.offsets.append(self.offset)
            self.before.append(self.seen)
        self.scanner.add(raw)
        blank = not raw.strip()
        self.offset, self.seen = self.offset + len(raw), self.seen + (not blank)
        self.end = self.end if blank else self.number + 1

    def finish(self, path: Path) -> FileIndex:
        offsets, before = (self.offsets, self.before) if self.offsets else ([0], [0])
        return FileIndex(path, self.scanner.finish(path), self.seen, offsets, before, self.end)


@dataclass(frozen=True)
class Gap:
    """Lines [start, stop) of a file that no work item covers yet; `offset`: where line `start` begins."""

    index: FileIndex
    start: int
    stop: int
    offset: int

    def span(self) -> Tuple[int, int]:
        """The non-blank ordinals [first, end) the gap holds."""
        return self.index.ordinal_of(self.start), self.index.ordinal_of(self.stop)


def deal(fixed: Sequence[Piece], gaps: Sequence[Gap], weights: Sequence[float]) -> List[List[Piece]]:
    """Each rank's work items: the `fixed` ones (ranges that have a ledger already: kept whole) go to the ranks
    with the most room first; the gaps are cut so every rank ends with its weight's share of all the lines."""
    shares: List[List[Piece]] = [[] for _ in weights]
    loads = [0.0] * len(weights)
    spans = [gap.span() for gap in gaps]
    total = sum(p.lines for p in fixed) + sum(end - first for first, end in spans)
    weight = sum(weights)
    targets = [total * w / weight for w in weights]
    roomiest = [(-target, r) for r, target in enumerate(targets)]  # a heap: 24k ranks x 24k kept ranges is slow
    heapq.heapify(roomiest)
    for piece in sorted(fixed, key=lambda p: -p.lines):
        _, r = heapq.heappop(roomiest)
        shares[r].append(piece)
        loads[r] += piece.lines
        heapq.heappush(roomiest, (loads[r] - targets[r], r))
    rooms = [max(t - load, 0.0) for t, load in zip(targets, loads)]
    bounds = _bounds(rooms, sum(end - first for first, end in spans), weights)
    for r, pieces in enumerate(_cut(gaps, spans, bounds)):
        shares[r] += pieces
    return shares


def _bounds(rooms: List[float], fresh: int, weights: Sequence[float]) -> List[int]:
    """Where each rank's stretch of the fresh lines begins (and the last one ends): rooms scaled to the lines."""
    if sum(rooms) <= 0:
        rooms = list(weights)
    cumulative, bounds, whole = 0.0, [0], sum(rooms)
    for room in rooms:
        cumulative += room
        bounds.append(round(fresh * cumulative / whole))
    bounds[-1] = fresh
    return bounds


def _cut(gaps: Sequence[Gap], spans, bounds: List[int]) -> List[List[Piece]]:
    """Per rank r the work items of the fresh lines bounds[r] <= k < bounds[r + 1], counted over the gaps in
    order (one walk over ranks and gaps together)."""
    out: List[List[Piece]] = [[] for _ in bounds[1:]]
    g, before = 0, 0
    for r, (low, high) in enumerate(zip(bounds, bounds[1:])):
        while g < len(gaps) and low < high:
            gap, (first, end) = gaps[g], spans[g]
            a, b = low - before, min(high - before, end - first)
            start, offset = (gap.start, gap.offset) if a == 0 else gap.index.number_of(first + a)
            stop = gap.stop if b == end - first else gap.index.number_of(first + b)[0]
            out[r].append(Piece(str(gap.index.path), start, stop, offset, b - a))
            low = before + b
            if b == end - first:
                gap.index.close()  # one open file at a time, however many files are cut (24k ranks)
                g, before = g + 1, before + end - first
    return out


def gaps_of(index: FileIndex, covered: Sequence[Tuple[int, int]]) -> List[Gap]:
    """The ranges of the file that `covered` ranges (sorted, disjoint) leave open, up to its last line."""
    bounds, at = [], 1
    for start, stop in sorted(covered):
        if start > at:
            bounds.append((at, start))
        at = max(at, stop)
    if at <= index.last:
        bounds.append((at, index.last + 1))
    gaps = [Gap(index, start, stop, index.offset_of(start)) for start, stop in bounds]
    return [gap for gap in gaps if index.ordinal_of(gap.stop) > index.ordinal_of(gap.start)]


def piece_of(index: FileIndex, start: int, stop: int) -> Piece:
    """An existing range (one with a ledger) as a work item."""
    return Piece(str(index.path), start, stop, index.offset_of(start), _count(index, start, stop))


def _count(index: FileIndex, start: int, stop: int) -> int:
    return index.ordinal_of(min(stop, index.last + 1)) - index.ordinal_of(start)


def describe(shares: List[List[Piece]], limit: int = 8) -> List[str]:
    """Lines for the plan: the spread of lines over ranks, then the first ranks' items."""
    loads = [sum(p.lines for p in share) for share in shares]
    items = sum(len(share) for share in shares)
    out = [f"{items} work items over {len(shares)} ranks: {min(loads, default=0)}-{max(loads, default=0)} lines "
           f"per rank, {min(map(len, shares), default=0)}-{max(map(len, shares), default=0)} items per rank"]
    for r, share in enumerate(shares[:limit]):
        listed = ", ".join(f"{Path(p.path).name}:{p.start}-{p.stop - 1}" for p in share) or "nothing"
        out.append(f"  rank {r}: {loads[r]} lines ({listed})")
    if len(shares) > limit:
        out.append(f"  ... and {len(shares) - limit} more ranks")
    return out
