"""Before anything is submitted: tokenize every input line with the model's tokenizer (no engine) and find the
lines whose prompt tokens plus sampling.max_tokens do not fit in the model's max_model_len.

vLLM refuses such a request (the server with HTTP 400; offline, a prompt of max_model_len tokens or more), so a
job would spend its allocation on the lines that fit and leave these as errors. `mode.on_too_long` decides:
refuse to launch (error), or let the job give them an ERROR record with the reason (record).

Fast enough for millions of lines (runner.prompt_tokens): the lines are tokenized in batches by the Rust tokenizer,
without the chat template around them; the template's own tokens are counted once and added. Only the lines that
come within `_RECHECK_MARGIN` tokens of the limit are counted exactly, with the template.
"""

import hashlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from runner import atomic
from runner.engine import engine_args
from runner.errors import ConfigError
from runner.job import typed_mode
from runner.mode import mode_of
from runner.prompt_tokens import PromptCounter, cache_root
from runner.schema import OnTooLong, PromptStyle

log = logging.getLogger(__name__)

_BATCH = 4096
# tokens by which "line alone + template" may differ from the rendered prompt (merges at the seams)
_RECHECK_MARGIN = 16
# lines named in a refusal or a warning
_SHOWN = 5


@dataclass
class Report:
    max_model_len: int
    max_tokens: int
    # input file name -> {line number: prompt tokens} of the lines that do not fit
    too_long: Dict[str, Dict[int, int]] = field(default_factory=dict)
    lines: int = 0
    # of `lines`, those tokenized by this check (the others' files were unchanged since an earlier check)
    tokenized: int = 0
    # the prompts' tokens, and the longest prompt's tokens and where it is ("file:line")
    prompt_tokens: int = 0
    longest: int = 0
    longest_at: str = ""
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(len(found) for found in self.too_long.values())

    def reason(self, prompt_tokens: int) -> str:
        return (f"too long: the prompt is {prompt_tokens} tokens, {prompt_tokens} + sampling.max_tokens="
                f"{self.max_tokens} > max_model_len={self.max_model_len}")

    def describe(self) -> str:
        where = [f"{name}:{number}" for name, found in self.too_long.items() for number in sorted(found)][:_SHOWN]
        longest = max(tokens for found in self.too_long.values() for tokens in found.values())
        more = f" and {self.count - len(where)} more" if self.count > len(where) else ""
        return (f"{self.count} of {self.lines} input lines do not fit: prompt tokens + sampling.max_tokens="
                f"{self.max_tokens} > max_model_len={self.max_model_len} ({', '.join(where)}{more}; longest prompt "
                f"{longest} tokens)")


PromptsOf = Callable[[Path], Iterator[Tuple[int, str]]]


def check(cfg: DictConfig, files: List[Path], prompts_of: Optional[PromptsOf] = None) -> Optional[Report]:
    """The lines that do not fit (None when the tokenizer or the context length cannot be known here);
    raises ConfigError naming them under mode.on_too_long=error. `prompts_of`: a file's prompts (the launch's
    one pass, runner.launch_pass), else the mode reads them."""
    return judge(cfg, count(cfg, files, prompts_of))


def count(cfg: DictConfig, files: List[Path], prompts_of: Optional[PromptsOf] = None) -> Optional[Report]:
    """The report of every file's prompt tokens; a file unchanged since an earlier check is not asked for its
    prompts. None when the tokenizer or the context length cannot be known here."""
    limit, mode = max_model_len(cfg), typed_mode(cfg.mode)
    counter = _counter(cfg.model.path, mode.prompt_style == PromptStyle.chat)
    if limit is None or counter is None:
        log.warning("pre-flight length check skipped: no tokenizer or max_model_len for model.path=%s",
                    cfg.model.path)
        return None
    report = Report(limit, int(cfg.sampling.get("max_tokens") or 1))
    started, cache_file = time.monotonic(), _cache_file(cfg, mode, counter, report)
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    try:
        report.tokenized = _scan(files, prompts_of or mode_of(cfg).prompts, counter, report, cache)
    except ValueError as e:  # e.g. prompt_style=chat with a tokenizer that has no chat template
        log.warning("pre-flight length check skipped: %s", e)
        return None
    report.seconds = time.monotonic() - started
    if report.tokenized:
        atomic.write_json(cache_file, cache)
    log.info("pre-flight: %d lines checked in %.1f s, %d tokenized (%.0f lines/s), the rest unchanged since an "
             "earlier check", report.lines, report.seconds, report.tokenized,
             report.tokenized / max(report.seconds, 1e-9))
    return report


def judge(cfg: DictConfig, report: Optional[Report]) -> Optional[Report]:
    """Refuse the launch (ConfigError) over lines that do not fit under mode.on_too_long=error; else warn."""
    if report is not None and report.count and typed_mode(cfg.mode).on_too_long == OnTooLong.error:
        raise ConfigError(f"{report.describe()}; shorten them, lower sampling.max_tokens, raise "
                          "model.engine.max_model_len, or set mode.on_too_long=record to give them an ERROR record "
                          "and answer the rest")
    if report is not None and report.count:
        log.warning("%s; mode.on_too_long=record: they get an ERROR record", report.describe())
    return report


def _scan(files: List[Path], prompts_of: PromptsOf, counter: PromptCounter, report: Report, cache: dict) -> int:
    """Fill the report file by file; a file unchanged since a launch with the same settings (size and mtime, in
    `cache`) is not tokenized again. Returns how many lines were tokenized."""
    tokenized = 0
    for path in files:
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = cache.get(path.name)
        if entry is None or entry["stamp"] != stamp or "tokens" not in entry:  # (an entry before token totals)
            before, tokens = report.lines, report.prompt_tokens
            longest = [0, 0]
            found = _too_long_in(path, prompts_of, counter, report, longest)
            entry = cache[path.name] = {"stamp": stamp, "lines": report.lines - before, "too_long": found,
                                        "tokens": report.prompt_tokens - tokens, "longest": longest}
            tokenized += entry["lines"]
        else:
            report.lines, report.prompt_tokens = report.lines + entry["lines"], report.prompt_tokens + entry["tokens"]
        if entry["longest"][0] > report.longest:
            report.longest, report.longest_at = entry["longest"][0], f"{path.name}:{entry['longest'][1]}"
        found = {int(number): tokens for number, tokens in entry["too_long"].items()}
        if found:
            report.too_long[path.name] = found
    return tokenized


def _cache_file(cfg: DictConfig, mode: DictConfig, counter: PromptCounter, report: Report) -> Path:
    """The cache of one input folder's checks under these settings (tokenizer, prompt shape, limits)."""
    settings = {"input": OmegaConf.to_container(cfg.input, enum_to_str=True), "tokenizer": counter.digest,
                "chat": counter.chat, "mode": mode.name, "limits": [report.max_model_len, report.max_tokens]}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "preflight" / f"{key}.json"


def max_model_len(cfg: DictConfig) -> Optional[int]:
    """The engine's context length: the engine arguments', else the model's max_position_embeddings."""
    given = engine_args(cfg).get("max_model_len")
    if given:
        return int(given)
    config = Path(cfg.model.path) / "config.json"
    if not config.is_file():
        return None
    hf = json.loads(config.read_text())
    found = hf.get("max_position_embeddings") or (hf.get("text_config") or {}).get("max_position_embeddings")
    return int(found) if found else None


def _counter(model_path: str, chat: bool) -> Optional[PromptCounter]:
    if not (Path(model_path) / "config.json").is_file():
        return None  # a hub id: the launching host may not reach the hub
    try:
        return PromptCounter(model_path, chat)
    except Exception as e:  # noqa: BLE001 - any failure here only means the check cannot run
        log.warning("pre-flight: the tokenizer of %s cannot be loaded here (%s)", model_path, e)
        return None


def _too_long_in(path: Path, prompts_of: PromptsOf, counter: PromptCounter, report: Report,
                 longest: List[int]) -> Dict[int, int]:
    """{line number: prompt tokens} of the file's lines that do not fit; counted exactly near the limit. Adds the
    prompts' tokens to the report and sets `longest` to [tokens, line number] of the file's longest prompt."""
    room = report.max_model_len - report.max_tokens
    margin = 0 if counter.exact_estimates else _RECHECK_MARGIN
    found = {}
    for batch in _batches(prompts_of(path)):
        report.lines += len(batch)
        for (number, prompt), tokens in zip(batch, counter.estimates([prompt for _, prompt in batch])):
            if tokens > room - margin and margin:
                tokens = counter.exact(prompt)
            report.prompt_tokens += tokens
            if tokens > longest[0]:
                longest[:] = [tokens, number]
            if tokens > room:
                found[number] = tokens
    return found


def _batches(items: Iterator, size: int = _BATCH) -> Iterator[list]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def write_for_ranks(report: Optional[Report], path: Path) -> None:
    """Under on_too_long=record: {input file name: {line: reason}} for the ranks, only when a line is too long."""
    if report is None or not report.count:
        path.unlink(missing_ok=True)  # a rerun whose lines now all fit: no stale list
        return
    reasons = {name: {str(n): report.reason(t) for n, t in found.items()} for name, found in report.too_long.items()}
    atomic.write_json(path, reasons)  # every host reads it: whole or not at all


def read_all(path: Path) -> Dict[str, Dict[int, str]]:
    """{input file name: {line number: reason}} of the lines found too long ({} when none was)."""
    if not path.is_file():
        return {}
    return {name: {int(n): reason for n, reason in found.items()} for name, found in json.loads(path.read_text()).items()}


def read_for_rank(path: Path, input_name: str) -> Dict[int, str]:
    """The too-long lines of one input file and their reasons ({} when none was found)."""
    return read_all(path).get(input_name, {})
