"""mode=per_tile, one rank: read {rank}.in, answer every line with an offline vLLM engine, write {rank}.out.

Answers are appended to out/{rank}.log.jsonl as each chunk finishes; a rerun answers only the lines not in it.
{rank}.out appears, complete, only when every line is answered.
"""

import logging
import os
import time
from pathlib import Path
from typing import List

from omegaconf import DictConfig, OmegaConf

from runner import engine, inputs
from runner.devices import DEVICE_VARS
from runner.job import RunDir
from runner.record_log import RecordLog, as_jsonl, as_original_text
from runner.schema import OutputFormat
from runner.summary import write_stats
from runner.topology import Placement

log = logging.getLogger(__name__)


def input_path(cfg: DictConfig, rank: int) -> Path:
    return Path(cfg.mode.input_dir) / f"{rank}.in"


def input_paths(cfg: DictConfig, world_size: int) -> List[Path]:
    return [input_path(cfg, rank) for rank in range(world_size)]


def _record(rank: int, line: inputs.Line, answer: engine.Answer) -> dict:
    return {
        "rank": rank,
        "line": line.number,
        "prompt": line.text,
        "text": answer.text,
        "prompt_tokens": answer.prompt_tokens,
        "output_tokens": answer.output_tokens,
        "finish_reason": answer.finish_reason,
    }


def run_rank(cfg: DictConfig, run: RunDir, placement: Placement, model_path: str) -> None:
    rank, started = placement.rank, time.monotonic()
    out_path = run.out / f"{rank}.out"
    if out_path.exists():
        log.info("rank %d: %s is complete already, nothing to do", rank, out_path)
        return
    lines = inputs.read_lines(input_path(cfg, rank))
    ledger = RecordLog(run.out / f"{rank}.log.jsonl")
    todo = [line for line in lines if line.number not in ledger.done()]
    log.info("rank %d on %s: %d lines, %d answered before, %d to do", rank, placement.hostname, len(lines),
             len(lines) - len(todo), len(todo))
    stats = {"name": f"rank{rank}", "host": placement.hostname, "local_rank": placement.local_rank,
             "device": {k: os.environ.get(k, "") for k in DEVICE_VARS}, "resumed": len(lines) - len(todo),
             "engine_start_s": 0.0, "generate_s": 0.0}
    if todo:
        _answer_all(cfg, rank, todo, ledger, model_path, stats)
    render = as_jsonl if cfg.mode.output_format == OutputFormat.jsonl else as_original_text
    records = ledger.records()
    ledger.finalize(out_path, render)
    stats.update(
        prompts=len(records),
        errors=0,
        prompt_tokens=sum(r["prompt_tokens"] for r in records),
        output_tokens=sum(r["output_tokens"] for r in records),
        wall_s=round(time.monotonic() - started, 3),
    )
    write_stats(run, f"rank{rank}", stats)
    log.info("rank %d: wrote %s (%d answers)", rank, out_path, len(records))


def _answer_all(cfg, rank, todo, ledger, model_path, stats) -> None:
    t0 = time.monotonic()
    llm = engine.build_llm(model_path, engine.engine_args(cfg))
    params = engine.sampling_params(OmegaConf.to_container(cfg.sampling))
    t1 = time.monotonic()
    size = max(cfg.mode.chunk_size, 1)
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        answers = engine.generate(llm, [line.text for line in chunk], cfg.mode.prompt_style, params)
        ledger.append(_record(rank, line, answer) for line, answer in zip(chunk, answers))
        log.info("rank %d: %d/%d lines answered", rank, start + len(chunk), len(todo))
    stats["engine_start_s"] = round(t1 - t0, 3)
    stats["generate_s"] = round(time.monotonic() - t1, 3)
