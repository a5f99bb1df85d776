"""Read and validate text input files before anything starts: missing, empty or undecodable input is reported."""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

from runner.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Line:
    # 1-based line number in the input file
    number: int
    text: str


def read_lines(path: Path, scanner=None) -> List[Line]:
    """Non-blank lines of a UTF-8 file, with their line numbers; trailing newlines stripped. `scanner` (a
    fingerprint.Scanner) is fed every raw line, so the file is fingerprinted in the same pass."""
    return list(_iter_lines(path, scanner))


class BadText(ValueError):
    """An input file that cannot be read as lines of UTF-8 text (one line naming it and the fix)."""


# how a compressed file begins (genomics data often comes gzipped): named, so the fix is plain
_COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip"), b"\x28\xb5\x2f\xfd": ("zstd", "unzstd"), b"BZh": ("bzip2", "bunzip2"),
               b"\xfd7zXZ\x00": ("xz", "unxz")}


class NotUtf8(BadText):
    """A line of an input file that is not UTF-8."""

    def __init__(self, path: Path, number: int, error: UnicodeDecodeError):
        packed = next((how for magic, how in _COMPRESSED.items() if _head(path).startswith(magic)), None)
        if packed:
            super().__init__(f"{path} is {packed[0]}-compressed; decompress it first ({packed[1]} -k {path.name})")
        else:
            super().__init__(f"{path}: line {number} is not UTF-8 ({error.reason} at byte {error.start + 1} of the "
                             "line)")


def _head(path: Path) -> bytes:
    """The file's first bytes (a compressed stream's magic; its first line may happen to decode)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)
    except OSError:
        return b""


class CrOnly(BadText):
    """A file whose lines end in CR alone (an old Mac export): read by LF it is one line, and its records would
    go out as one prompt (a TSV's rows as one row)."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: its lines end in CR alone (an old Mac export), so it reads as one line; convert "
                         f"them to LF, e.g. tr '\\r' '\\n' < {path.name} > {path.stem}.lf{path.suffix}")


def _iter_lines(path: Path, scanner=None, start: int = 1, stop: Optional[int] = None,
                offset: Optional[int] = None) -> Iterator[Line]:
    with open(path, "rb") as f:
        if offset is not None:
            f.seek(offset)  # the caller knows where line `start` begins
        for number, raw in enumerate(f, start=start if offset is not None else 1):
            if stop is not None and number >= stop:
                return
            if scanner is not None:
                scanner.add(raw)
            if number < start:
                continue
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise NotUtf8(path, number, e) from None
            # a byte-order mark (spreadsheet exports) is no part of the text; one starts a line in the middle of
            # files concatenated from such exports (`cat a.tsv b.tsv`), where it would be part of an id or a prompt
            text = text.removeprefix("\ufeff")
            if number == 1 and not raw.endswith(b"\n") and "\r" in text:  # no LF in the file, and CRs inside
                raise CrOnly(path)
            if text.strip():
                yield Line(number, text)


def iter_lines(path: Path, start: int = 1, stop: Optional[int] = None, offset: Optional[int] = None,
               scanner=None) -> Iterator[Line]:
    """The non-blank lines numbered start <= number < stop of a UTF-8 file one at a time (files of millions of
    lines are not held whole); `offset`: the byte offset where line `start` begins (seek instead of scanning);
    `scanner`: fed every raw line read (its `add`)."""
    return _iter_lines(path, scanner, start, stop, offset)


def count_lines(path: Path, scanner=None) -> int:
    """The non-blank lines of a UTF-8 file (the lines a job answers), without keeping them; `scanner`: fed every
    raw line read (its `add`)."""
    return sum(1 for _ in _iter_lines(path, scanner))


def report(problems: List[str]) -> None:
    """One ConfigError listing every problem found, each naming its file."""
    if problems:
        listing = "\n  ".join(problems)
        raise ConfigError(f"{len(problems)} input file(s) cannot be used:\n  {listing}\nFix or remove them, then rerun.")
