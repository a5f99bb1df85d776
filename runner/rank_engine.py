"""One rank's engine over its entries: build it, feed it, hand each step's answers to the caller, and time both
(engine_start_s, generate_s, and record_s: the rank's own work between steps). Both ways per_tile assigns work
(runner/per_tile.py by rank, runner/spread_rank.py spread) answer through it."""

import logging
import time
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

from omegaconf import OmegaConf

from runner import engine, engine_watch, inflight
from runner.errors import JobFailedError
from runner.records import is_error
from runner.stats import WorkerStats
from runner.tally import Tally
from runner.walltime import near_end

log = logging.getLogger(__name__)


def answer_all(cfg, rank, todo: Iterable, write: Callable[[list], List[dict]], model_path, stats: WorkerStats,
               tally: Tally, expected: Optional[int] = None, first: Sequence[list] = (),
               journal: Optional[Callable[[list, int], None]] = None) -> None:
    """Answer the lines with one engine (`todo` may be a stream, read as the engine takes lines); `write` gets
    each step's finished (line, answer) pairs and returns the records it appended (counted in the tally).
    `expected`: the lines to answer, for the progress lines (len(todo) if not given). `first`: groups of lines
    a dead rank had in flight, each answered alone before the rest; `journal(batch, level)` is handed each batch
    before it goes in, with how alone it is (runner/inflight.py).

    An engine that dies or hangs under its lines (runner/engine_watch.py) is built again, and the lines it held
    are answered first, in halves, each half alone in the engine: a line that ends the engine alone (a poison
    line) gets an ERROR record naming why, every other line its answer, in this run."""
    margin = cfg.mode.walltime_margin_s
    expected = len(todo) if expected is None else expected

    def may_add() -> bool:
        return not near_end(margin)

    if not may_add():
        log.warning("rank %d: less than %.0f s of walltime left; not starting", rank, margin)
        return
    feed = _Feed(cfg, rank, write, tally, expected, journal)
    suspects, reading = [list(group) for group in first], [0.0]
    stream = _timed(todo, reading)
    stats.engine_start_s = 0.0
    try:
        while True:
            t0 = time.monotonic()
            llm = engine.build_llm(model_path, engine.engine_args(cfg))
            guarding = engine_watch.guard(llm)  # no core outlives the rank, even one SIGKILLed
            stats.engine_start_s = round(stats.engine_start_s + time.monotonic() - t0, 3)
            feed.started(time.monotonic() - t0)
            try:
                return feed.run(llm, suspects, stream, may_add)
            except engine.EngineDied as died:
                engine_watch.shutdown(llm, guarding)
                del llm
                feed.died(died, suspects)
    finally:
        # record_s: the part of generate_s the rank spent on its own work between engine steps (reading its lines,
        # records, checkpoint, progress lines); the rest was vLLM
        stats.generate_s = round(time.monotonic() - feed.t1 - feed.rebuild_s, 3) if feed.t1 else 0.0
        stats.record_s, stats.restarts = round(feed.record_s + reading[0], 6), feed.restarts


class _Feed:
    """What answer_all keeps across its engines: the progress, the time spent on records, the deaths in a row."""

    def __init__(self, cfg, rank: int, write, tally: Tally, expected: int, journal):
        self.cfg, self.rank, self.write, self.tally, self.expected = cfg, rank, write, tally, expected
        self.journal = journal or _no_journal
        self.sampling = engine.Sampling(OmegaConf.to_container(cfg.sampling))
        self.t1 = self.last_report = None
        # deaths: of engines in a row with no line answered between them; restarts: engines built again in all
        self.record_s, self.rebuild_s, self.deaths, self.restarts = 0.0, 0.0, 0, 0

    def started(self, build_s: float) -> None:
        """An engine was built in build_s (the first starts the generation clock; the others' count apart)."""
        if self.t1 is None:
            self.t1 = self.last_report = time.monotonic()
        else:
            self.rebuild_s += build_s

    def run(self, llm, suspects: List[list], stream, may_add) -> None:
        """The lines an engine died under (each group alone in flight), then the rest of the stream."""
        mode = self.cfg.mode
        # the rank's own death is a line's fault only when the engine core runs in the rank's process: a core of
        # its own dies alone (the watch restarts it in this run), so a rank that dies beside one died of something
        # else (preemption, a lost node, a kill) and its lines in flight are ordinary work for the next run
        journal = self.journal if not engine_watch.core_processes(llm) else _no_journal
        with engine_watch.EngineWatch(llm, mode.stall_s) as watch:
            while suspects and may_add():
                group = suspects.pop(0)
                level = inflight.ALONE if len(group) == 1 else inflight.GROUP
                self._take(engine.stream_answers(llm, group, self.sampling, len(group), may_add, watch,
                                                 lambda batch: journal(batch, level)))
            if may_add():
                self._take(engine.stream_answers(llm, stream, self.sampling, mode.max_in_flight, may_add, watch,
                                                 lambda batch: journal(batch, inflight.MIXED)))

    def _take(self, answers) -> None:
        for finished in answers:
            got = time.monotonic()
            for record in self.write(finished):
                self.tally.count(record)
                self.deaths = 0 if not is_error(record) else self.deaths
            if got - self.last_report >= self.cfg.mode.progress_every_s:
                self.last_report = got
                log.info("rank %d: %s", self.rank, self.tally.progress(self.expected, got - self.t1))
            self.record_s += time.monotonic() - got

    def died(self, died, suspects: List[list]) -> None:
        """After an engine ended: a line it held alone gets its ERROR record; more are answered again in halves
        (before the rest); the rank gives up after more than mode.max_restarts deaths under one line or none in
        a row, no line answered between (an engine that dies whatever it is given)."""
        # a death under several lines narrows the suspects (at most log2 of max_in_flight of them per poison
        # line); one under a line alone, or none, is what max_restarts bounds
        lost, self.restarts = died.lost, self.restarts + 1
        self.deaths += len(lost) <= 1
        log.error("rank %d: the engine %s with %d line(s) in flight", self.rank, died.why, len(lost))
        if len(lost) == 1:
            error = f"the vLLM engine {died.why} with this line alone in flight: the line is left unanswered"
            for record in self.write([(lost[0], engine.Answer("", 0, 0, "", error=error))]):
                self.tally.count(record)
        elif lost:
            half = (len(lost) + 1) // 2
            suspects[:0] = [lost[:half], lost[half:]]
        if self.deaths > self.cfg.mode.max_restarts:
            raise JobFailedError(f"rank {self.rank}: the vLLM engine ended {self.deaths} times in a row with no line "
                                 f"answered between (the last: {died.why}); its lines left are kept for a rerun")
        log.warning("rank %d: building the engine again (%d death(s) in a row)", self.rank, self.deaths)


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


def _no_journal(batch: list, level: int) -> None:
    """No in-flight journal: nothing to tell the next run."""
