"""input=tsv: a non-blank line is one row of tab-separated columns, named by each file's header row or by
input.columns. Real files mix column counts (an optional field, extra annotations): input.rest names the last
column, which then takes every remaining field of a longer row; a row shorter than the columns is an ERROR record
naming its column count, and so is a longer one without input.rest.
"""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from runner import inputs
from runner.readers import Entry, TextReader, malformed


class TsvReader(TextReader):
    def __init__(self, cfg):
        super().__init__(cfg)
        # plain values: read per line, and a DictConfig's attribute costs microseconds
        self.rest, self.header_row, self.given = self.input.rest, bool(self.input.header), list(self.input.columns)
        self._headers: Dict[Path, Optional[inputs.Line]] = {}  # one read of a file's first line per reader
        self._named: Dict[Path, List[str]] = {}

    def header(self, path: Path) -> Optional[inputs.Line]:
        """The file's header row (its first non-blank line), None without input.header or in an empty file."""
        if not self.header_row:
            return None
        if path not in self._headers:
            self._headers[path] = next(inputs.iter_lines(path), None)
        return self._headers[path]

    def columns(self, path: Path) -> List[str]:
        if self.given:
            return list(self.given)
        head = self.header(path)
        return head.text.split("\t") if head else []

    def count(self, path: Path, scanner=None) -> int:
        return max(0, inputs.count_lines(path, scanner) - self.header_row)

    def entry(self, path: Path, line: inputs.Line) -> Optional[Entry]:
        head = self.header(path)
        if head is not None and line.number == head.number:
            return None
        return self.row(line, self._columns(path))

    def _columns(self, path: Path) -> List[str]:
        if path not in self._named:
            self._named[path] = self.columns(path)
        return self._named[path]

    def row(self, line: inputs.Line, columns: List[str]) -> Entry:
        values, want = line.text.split("\t"), len(columns)
        named = {"line": line.text, **dict(zip(columns, values))}
        if len(values) < want:
            return malformed(line.number, line.text, f"the row has {len(values)} tab-separated columns, fewer than "
                                                     f"the {want} wanted: {columns}", self.ids(named))
        if len(values) > want and not self.rest:
            return malformed(line.number, line.text, f"the row has {len(values)} tab-separated columns, more than the "
                                                     f"{want} wanted: {columns} (input.rest={columns[-1]} would take "
                                                     "the rest of a row)", self.ids(named))
        if len(values) > want:
            named[columns[-1]] = "\t".join(values[want - 1:])
        return self.templated(line.number, line.text, named)

    def known_fields(self, path: Path) -> Optional[Tuple[str, List[str]]]:
        where = path.name if self.header_row and not self.given else "input.columns"
        return where, ["line", *self.columns(path)]

    def check(self, files: List[Path]) -> str:
        for path in files[:1] if self.given or not self.header_row else files:
            columns = self.columns(path)
            if not columns:
                return (f"input=tsv needs its columns: input.header=true (each file's first row names them) or "
                        f"input.columns=[...]{f' ({path} has no header row)' if self.header_row else ''}")
            if len(set(columns)) < len(columns):
                return f"the columns of {path} name one column twice: {columns}; rename it (input.columns=[...])"
            if self.rest and self.rest != columns[-1]:
                return f"input.rest={self.rest} is not the last column of {path}: {columns}; the rest of a row goes there"
        return super().check(files)
