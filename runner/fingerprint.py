"""Fingerprints of an input file and of the answer-shaping config, kept in one small sidecar per output
(`out/<name>.fp.json`, beside the ledger), so that a rerun can tell what changed since the answers were made.

An input's fingerprint is its size, mtime and blake2b hash, plus the hashes of blocks of about `BLOCK` bytes
cut at line ends. The first block that differs from the file as it is now says from which line on it changed:
lines appended after the answered ones are told apart from an edit or a deletion before them (which would shift
records onto other prompts). It is computed in the same pass that reads the lines, and the sidecar costs a few
file operations per input file, never one per line.
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from runner import atomic
from runner.errors import RunnerError
from runner.run_dir import Item, sidecar_of

# bytes per hashed block: a change is located to within one block (a million-line file of 1 KB lines: ~1000)
BLOCK = 1 << 20


def _digest(data: bytes = b"", size: int = 8):
    return hashlib.blake2b(data, digest_size=size)


@dataclass
class InputPrint:
    size: int = 0
    mtime_ns: int = 0
    blake2b: str = ""
    # physical lines (the last line number)
    lines: int = 0
    final_newline: bool = True
    # (end offset, last line number in the block, block hash) per block
    blocks: List[list] = field(default_factory=list)


class Scanner:
    """Fed every raw line of a file as it is read (by inputs.read_lines); builds its InputPrint."""

    def __init__(self, block: int = BLOCK):
        self.block, self.print = block, InputPrint()
        self._whole, self._part, self._start = _digest(size=16), _digest(), 0

    def add(self, raw: bytes) -> None:
        p = self.print
        self._whole.update(raw)
        self._part.update(raw)
        p.size, p.lines, p.final_newline = p.size + len(raw), p.lines + 1, raw.endswith(b"\n")
        if p.size - self._start >= self.block:
            self._cut()

    def _cut(self) -> None:
        self.print.blocks.append([self.print.size, self.print.lines, self._part.hexdigest()])
        self._part, self._start = _digest(), self.print.size

    def finish(self, path: Path) -> InputPrint:
        if self.print.size > self._start:
            self._cut()
        self.print.blake2b, self.print.mtime_ns = self._whole.hexdigest(), os.stat(path).st_mtime_ns
        return self.print


def scan(path: Path, by_lines: bool = True) -> InputPrint:
    """The file's fingerprint in one pass: fed line by line (text formats: blocks end at line ends, so a change is
    located to its line), or in 1 MiB chunks (a binary format: no line is held whole, `lines` counts chunks)."""
    scanner = Scanner()
    with open(path, "rb") as f:
        for raw in f if by_lines else iter(lambda: f.read(BLOCK), b""):
            scanner.add(raw)
    return scanner.finish(path)


def changed_from(stored: InputPrint, path: Path) -> Optional[int]:
    """None when the fingerprinted content is still the start of the file (unchanged, or lines appended);
    else the first line that may have changed (the first line of the first block that differs)."""
    with open(path, "rb") as f:
        start, first_line = 0, 1
        for end, last_line, digest in stored.blocks:
            if _digest(f.read(end - start)).hexdigest() != digest:
                return first_line
            start, first_line = end, last_line + 1
        if not stored.final_newline and f.read(1) not in (b"", b"\n", b"\r"):
            return stored.lines  # the last line, which had no newline, was extended
    return None


def unchanged(stored: InputPrint, path: Path) -> bool:
    """Cheap check (one stat): same size and mtime as fingerprinted."""
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns) == (stored.size, stored.mtime_ns)


def answered_as_it_is(item: Item, sidecar: Optional["Sidecar"]) -> bool:
    """A finished output (its counts in the sidecar) of an input with the size and mtime it was answered with:
    told by one stat, the input is not read."""
    return (sidecar is not None and sidecar.answered is not None and item.output.exists() and item.input.exists()
            and unchanged(sidecar.input, item.input))


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return value.name if isinstance(value, Enum) else value


# input keys that do not shape the answers: where the files are (a moved folder is the same), how many rows are
# decoded at once
_NOT_SHAPING = ("path", "_target_", "batch_rows")


def config_print(cfg: DictConfig) -> Dict[str, Any]:
    """The settings that shape the answers, as flat dotted keys (so a refusal can name what changed)."""
    from runner.engine import engine_args
    from runner.outputs import format_of

    flat: Dict[str, Any] = {"model.name": cfg.model.name, "model.path": cfg.model.path}
    flat.update({f"engine.{k}": _plain(v) for k, v in engine_args(cfg).items()})
    flat.update({f"sampling.{k}": _plain(v) for k, v in cfg.sampling.items()})
    for key in ("prompt_style", "assign"):
        if key in cfg.mode:
            flat[f"mode.{key}"] = _plain(cfg.mode[key])
    flat["output.format"] = format_of(cfg).name  # a job file of an older runner had mode.output_format
    flat.update({f"input.{k}": _plain(v) for k, v in (cfg.get("input") or {}).items() if k not in _NOT_SHAPING})
    return json.loads(json.dumps(flat, default=str))


def differing(before: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


@dataclass
class Sidecar:
    # the run's answer set (job.yaml's rerun_epoch) the records belong to
    epoch: str
    config: Dict[str, Any]
    input: InputPrint
    # set just before the output is finalized: records in it, and the lines whose record is an ERROR
    answered: Optional[int] = None
    errors: Optional[List[int]] = None


def read_sidecar(ledger: Path) -> Optional[Sidecar]:
    path = sidecar_of(ledger)
    try:
        raw = json.loads(path.read_text())
        return Sidecar(**{**raw, "input": InputPrint(**raw["input"])})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as e:  # (written atomically: only a hand or a broken disk spoils it)
        raise RunnerError(f"{path} cannot be read ({type(e).__name__}: {e}): restore it, or remove it (its output "
                          f"is then adopted as it is)") from e


def write_sidecar(ledger: Path, sidecar: Sidecar) -> None:
    """Atomically (temp file, rename): a reader sees the old sidecar or the new one."""
    path = sidecar_of(ledger)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, asdict(sidecar))
