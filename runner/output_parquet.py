"""output.parquet: a finished output's records as a Parquet file, one column per record key, written a row
group at a time (never the whole output in memory) into a temp file that replaces the target when complete.

Column types: the record's own keys have fixed ones (line, rank and the token counts int64, the rest
strings); an input id field takes the one Python type its values have over the whole input (an id field of
mixed types, e.g. 7 and "7a", is written as text; the JSONL keeps the values as they were).
"""

import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from runner import atomic
from runner.records import Record

_BODY = [f.name for f in fields(Record) if f.name not in ("ids", "input")]
_FIXED = {"rank": pa.int64(), "file": pa.string(), "line": pa.int64(), "input": pa.string(),
          "prompt_tokens": pa.int64(), "output_tokens": pa.int64()}
_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


class ParquetSink:
    def __init__(self, path: Path, id_types: Dict[str, Optional[type]], rows: int):
        """id_types: the input id fields' Python types (runner.outputs.id_types); rows: records per row group."""
        self.path, self.id_types, self.rows = Path(path), id_types, max(1, rows)
        self._tmp = atomic.temp_path(self.path)
        self._batch: List[dict] = []
        self._schema: Optional[pa.Schema] = None
        self._writer: Optional[pq.ParquetWriter] = None

    def __enter__(self) -> "ParquetSink":
        return self

    def add(self, record: Dict[str, Any]) -> None:
        if "response" not in record:  # a record an older runner left in a resumed ledger
            record = Record.from_json(record).to_json()
        self._batch.append(record)
        if len(self._batch) >= self.rows:
            self._flush()

    def _flush(self) -> None:
        if self._schema is None:
            self._schema = self._schema_of(self._batch[0] if self._batch else {})
            self._writer = pq.ParquetWriter(self._tmp, self._schema)
        if self._batch:
            extra = {key for record in self._batch for key in record} - set(self._schema.names)
            if extra:
                raise ValueError(f"records hold keys {sorted(extra)} that {self.path.name} has no column for")
            columns = [pa.array([_cell(r.get(f.name), f.type) for r in self._batch], f.type) for f in self._schema]
            self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._schema))
            self._batch = []

    def _schema_of(self, first: Dict[str, Any]) -> pa.Schema:
        """The first record's ids in its order, the input ids it lacks, `input` when any record has it, then
        the record's own keys."""
        ids = [k for k in first if k not in _BODY and k != "input"]
        ids += [k for k in self.id_types if k not in ids and k != "input"]
        names = ids + (["input"] if "input" in self.id_types or "input" in first else []) + _BODY
        return pa.schema([(name, self._type_of(name)) for name in names])

    def _type_of(self, name: str) -> pa.DataType:
        if name in _FIXED:
            return _FIXED[name]
        if name in self.id_types:
            return _ARROW.get(self.id_types[name], pa.string())
        return pa.string()

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                self._flush()
                self._writer.close()
                with open(self._tmp, "rb") as f:
                    os.fsync(f.fileno())  # the data on disk before the rename (runner/atomic.py says why)
                os.replace(self._tmp, self.path)
        finally:
            if self._writer is not None and kind is not None:
                self._writer.close()
            self._tmp.unlink(missing_ok=True)


def _cell(value: Any, kind: pa.DataType) -> Any:
    """A value as its column holds it (an id of a mixed-type field as its text)."""
    if value is None or not pa.types.is_string(kind) or isinstance(value, str):
        return value
    return str(value)
