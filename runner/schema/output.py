"""The output block: what a finished output holds."""

from dataclasses import dataclass
from enum import Enum

from runner.schema.fields import at_least


class OutputFormat(Enum):
    # the input's own: openai_batch for input=openai_batch, else jsonl (runner/outputs.py)
    auto = "auto"
    jsonl = "jsonl"
    openai_batch = "openai_batch"
    text = "text"


@dataclass
class OutputConfig:
    """What a finished output holds (both modes); the resume ledger holds the records in every format."""

    # jsonl: the records (runner/records.py); openai_batch: the lines `vllm run-batch` writes (id, custom_id,
    # response with status_code and body, error), under the ids' custom_id; text: the original per-tile script's
    # "Prompt: ..., Generated text: ..." lines; auto: openai_batch for input=openai_batch, else jsonl
    format: OutputFormat = OutputFormat.auto
    # also write each finished output's records as <output without its suffix>.parquet beside it (columns: the
    # record's keys)
    parquet: bool = False
    # records per Parquet row group: what is held in memory while it is written
    parquet_rows: int = at_least(1, 65536)
