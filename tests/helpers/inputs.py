"""Input folders and output records."""

import json
from pathlib import Path


def write_inputs(folder: Path, files: dict) -> Path:
    """files: name -> list of lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text("".join(f"{line}\n" for line in lines))
    return folder


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
