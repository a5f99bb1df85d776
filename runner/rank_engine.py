"""One rank's engine over its entries: build it, feed it, hand each step's answers to the caller, and time both
(engine_start_s, generate_s, and record_s: the rank's own work between steps). Both ways per_tile assigns work
(runner/per_tile.py by rank, runner/spread_rank.py spread) answer through it."""

import logging
import time
from typing import Callable, Iterable, Iterator, List, Optional

from omegaconf import OmegaConf

from runner import engine
from runner.stats import WorkerStats
from runner.tally import Tally
from runner.walltime import near_end

log = logging.getLogger(__name__)


def answer_all(cfg, rank, todo: Iterable, write: Callable[[list], List[dict]], model_path, stats: WorkerStats,
               tally: Tally, expected: Optional[int] = None) -> None:
    """Answer the lines with one engine (`todo` may be a stream, read as the engine takes lines); `write` gets
    each step's finished (line, answer) pairs and returns the records it appended (counted in the tally).
    `expected`: the lines to answer, for the progress lines (len(todo) if not given)."""
    margin = cfg.mode.walltime_margin_s
    expected = len(todo) if expected is None else expected

    def may_add() -> bool:
        return not near_end(margin)

    if not may_add():
        log.warning("rank %d: less than %.0f s of walltime left; not starting", rank, margin)
        return
    t0 = time.monotonic()
    llm = engine.build_llm(model_path, engine.engine_args(cfg))
    sampling = engine.Sampling(OmegaConf.to_container(cfg.sampling))
    t1 = last_report = time.monotonic()
    stats.engine_start_s = round(t1 - t0, 3)
    every, record_s, reading = cfg.mode.progress_every_s, 0.0, [0.0]
    try:
        for finished in engine.stream_answers(llm, _timed(todo, reading), sampling, cfg.mode.max_in_flight, may_add):
            got = time.monotonic()
            for record in write(finished):
                tally.count(record)
            if got - last_report >= every:
                last_report = got
                log.info("rank %d: %s", rank, tally.progress(expected, got - t1))
            record_s += time.monotonic() - got
    finally:
        # record_s: the part of generate_s the rank spent on its own work between engine steps (reading its lines,
        # records, checkpoint, progress lines); the rest was vLLM
        stats.generate_s, stats.record_s = round(time.monotonic() - t1, 3), round(record_s + reading[0], 6)


def _timed(entries: Iterable, spent: List[float]) -> Iterator:
    """The entries, the seconds taken to read them (a stream reads its file as the engine takes lines) added to
    spent[0]."""
    it = iter(entries)
    while True:
        started = time.monotonic()
        entry = next(it, None)
        spent[0] += time.monotonic() - started
        if entry is None:
            return
        yield entry
