"""Read and validate input files before anything starts: missing, empty or undecodable input is reported."""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

from runner.errors import ConfigError


@dataclass(frozen=True)
class Line:
    # 1-based line number in the input file
    number: int
    text: str


def read_lines(path: Path, scanner=None) -> List[Line]:
    """Non-blank lines of a UTF-8 file, with their line numbers; trailing newlines stripped. `scanner` (a
    fingerprint.Scanner) is fed every raw line, so the file is fingerprinted in the same pass."""
    return list(_iter_lines(path, scanner))


class NotUtf8(ValueError):
    """A line of an input file that is not UTF-8."""

    def __init__(self, path: Path, number: int, error: UnicodeDecodeError):
        super().__init__(f"{path}: line {number} is not UTF-8 ({error.reason} at byte {error.start + 1} of the line)")


def _iter_lines(path: Path, scanner=None) -> Iterator[Line]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if scanner is not None:
                scanner.add(raw)
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise NotUtf8(path, number, e) from None
            if text.strip():
                yield Line(number, text)


def iter_lines(path: Path) -> Iterator[Line]:
    """The non-blank lines of a UTF-8 file one at a time (files of millions of lines are not held whole)."""
    return _iter_lines(path)


def count_lines(path: Path) -> int:
    """The non-blank lines of a UTF-8 file (the lines a job answers), without keeping them."""
    return sum(1 for _ in _iter_lines(path))


def check_file(path: Path) -> str:
    """'' when the file is usable, else what is wrong with it."""
    if not path.is_file():
        return f"{path}: missing"
    try:
        if count_lines(path):  # decodes every line, not just the first
            return ""
    except NotUtf8 as e:
        return str(e)
    return f"{path}: empty (no non-blank line)"


def validate(paths: List[Path]) -> None:
    """Raise one ConfigError listing every unusable file."""
    problems = [p for p in (check_file(path) for path in paths) if p]
    if problems:
        listing = "\n  ".join(problems)
        raise ConfigError(f"{len(problems)} input file(s) cannot be used:\n  {listing}\nFix or remove them, then rerun.")
