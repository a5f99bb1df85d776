"""input=parquet: a row of a Parquet file is one record, numbered from 1; input.template over its columns.

Read with pyarrow a row group at a time, in record batches of input.batch_rows rows and only the columns the
template and the ids use: a file is never held whole in memory, and a range of rows reads only the row groups it
overlaps (found from the file's metadata, so `offset` is not needed).
"""

import json
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from runner.readers import Entry, InputReader


def _parquet():
    import pyarrow.parquet as pq  # imported when a Parquet input is read: other formats never load pyarrow

    return pq


class ParquetReader(InputReader):
    # a Parquet file rewritten with rows appended differs in its footer: where it changed is not known
    locates_changes = False

    def count(self, path: Path, scanner=None) -> int:
        return _parquet().ParquetFile(path).metadata.num_rows

    def read(self, path: Path, start: int = 1, stop: Optional[int] = None,
             offset: Optional[int] = None) -> Iterator[Entry]:
        file = _parquet().ParquetFile(path)
        names = set(file.schema_arrow.names)
        columns = [name for name in sorted(self.used | set(self.id_fields)) if name in names]
        first = 1
        for group in range(file.metadata.num_row_groups):
            end = first + file.metadata.row_group(group).num_rows  # this group holds rows first .. end - 1
            if end > start and (stop is None or first < stop):
                yield from self._group(file, group, columns, first, start, stop)
            first = end

    def _group(self, file, group: int, columns: List[str], number: int, start: int,
               stop: Optional[int]) -> Iterator[Entry]:
        for batch in file.iter_batches(batch_size=self.input.batch_rows, row_groups=[group], columns=columns):
            for row in batch.to_pylist():
                if number >= start and (stop is None or number < stop):
                    yield self._entry(number, row)
                number += 1

    def _entry(self, number: int, row: dict) -> Entry:
        entry = self.templated(number, "", row)
        if entry.error:  # only a malformed row keeps its values as read (its record's `input`)
            return Entry(number, json.dumps(row, ensure_ascii=False, default=str), entry.request, entry.error)
        return entry

    def problem(self, path: Path) -> str:
        if not path.is_file():
            return f"{path}: missing"
        try:
            rows = self.count(path)
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for a file that is no Parquet vary by version
            return f"{path}: not a Parquet file ({type(e).__name__}: {e})"
        return "" if rows else f"{path}: empty (no row)"

    def known_fields(self, path: Path) -> Optional[Tuple[str, List[str]]]:
        try:
            return path.name, list(_parquet().ParquetFile(path).schema_arrow.names)
        except Exception:  # noqa: BLE001 - an unreadable file is reported by problem()
            return None
