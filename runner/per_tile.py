"""mode=per_tile, one rank: answer its records (through the `input` reader) with an offline vLLM engine. With
mode.assign=spread (the default) they are its share of every input file (runner/spread.py, runner/spread_rank.py);
with assign=by_rank, the original layout, it reads {rank}.in and writes {rank}.out:

Each answer is appended to out/{rank}.log.jsonl as it finishes; a rerun answers only the lines not in it (and
those with only ERROR records, and lines appended since; runner/rerun.py). {rank}.out appears, complete, only
when every line has a record.
"""

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Dict, List

from omegaconf import DictConfig

from runner import engine, layout, outputs, preflight, rank_engine, ray_group, rerun
from runner.devices import DEVICE_VARS
from runner.errors import ConfigError, JobFailedError
from runner.mode import Mode
from runner.readers import Entry, reader_of
from runner.record_log import RecordLog
from runner.records import LINE, Record
from runner.run_dir import Item, RunDir
from runner.schema import Assign, OnTooLong, OutputFormat
from runner.stats import WorkerStats
from runner.tally import Tally
from runner.topology import Placement

log = logging.getLogger(__name__)


def input_path(cfg: DictConfig, rank: int) -> Path:
    return Path(cfg.input.path) / f"{rank}.in"


def input_paths(cfg: DictConfig, world_size: int) -> List[Path]:
    if not Path(cfg.input.path).is_dir():
        raise ConfigError(f"input.path={cfg.input.path} is not a folder: per_tile's rank r reads <input.path>/r.in; "
                          "set input.path=FOLDER")
    return [input_path(cfg, rank) for rank in range(world_size)]


def _record(rank: int, entry: Entry, answer: engine.Answer) -> dict:
    ids = {"rank": rank, LINE: entry.number, **entry.request.ids}
    if entry.error:
        return Record.failed(ids, None, entry.error, entry.raw).to_json()
    if answer.error:
        return Record.failed(ids, entry.request.text, answer.error).to_json()
    return Record(ids, entry.request.text, answer.text, prompt_tokens=answer.prompt_tokens,
                  output_tokens=answer.output_tokens, finish_reason=answer.finish_reason).to_json()


def run_rank(cfg: DictConfig, run: RunDir, placement: Placement, model_path: str,
             stats: WorkerStats) -> WorkerStats:
    """Answer the rank's lines, filling `stats` (the worker writes them, also when this fails)."""
    rank, started = placement.rank, time.monotonic()
    item = run.rank_item(input_path(cfg, rank), rank)
    lines, ledger = rerun.begin(cfg, item, cfg.mode.sync_every_s)
    todo = rerun.todo(lines, ledger, cfg) if ledger is not None else []
    done = len(lines) - len(todo)
    log.info("rank %d on %s: %d lines, %d answered before, %d to do", rank, placement.hostname, len(lines), done,
             len(todo))
    tally, complete = Tally(), ledger is None
    stats.name, stats.host, stats.local_rank = f"rank{rank}", placement.hostname, placement.local_rank
    stats.device, stats.resumed, stats.record_s = {k: os.environ.get(k, "") for k in DEVICE_VARS}, done, 0.0
    if complete:
        log.info("rank %d: %s is complete already, nothing to do", rank, item.output)
    try:
        if not complete:
            todo = _record_malformed(rank, todo, ledger, tally)
            if todo and cfg.mode.on_too_long == OnTooLong.record:
                todo = _record_too_long(run, rank, item.input.name, todo, ledger, tally)
            if todo:
                write = lambda pairs: _append(ledger, [_record(rank, line, answer) for line, answer in pairs])
                rank_engine.answer_all(cfg, rank, todo, write, model_path, stats, tally)
            complete = rerun.finish(cfg, item, lines, ledger)
            if complete:
                log.info("rank %d: wrote %s (%d answers)", rank, item.output, len(lines))
    finally:
        stats.count(tally)
        stats.prompts, stats.wall_s = done + tally.answered, round(time.monotonic() - started, 3)
    if not complete:
        left = sum(ledger.needs(line.number, False) for line in lines)
        raise JobFailedError(f"rank {rank} stopped near the walltime with {left} lines left; rerun the same "
                             "command to resume")
    return stats


def _record_malformed(rank: int, todo: List[Entry], ledger: RecordLog, tally: Tally) -> List[Entry]:
    """Give the records no request could be built from an ERROR record naming why; the entries left to answer."""
    records = [_record(rank, entry, engine.Answer("", 0, 0, "")) for entry in todo if entry.error]
    if records:
        ledger.append(records)
        for record in records:
            tally.count(record)
        log.warning("rank %d: %d malformed record(s) get an ERROR record", rank, len(records))
    return [entry for entry in todo if not entry.error] if records else todo


def _record_too_long(run: RunDir, rank: int, input_name: str, todo: List[Entry], ledger: RecordLog,
                     tally: Tally) -> List[Entry]:
    """Give the lines the launch found too long for the model an ERROR record; the lines left to answer."""
    reasons = preflight.read_for_rank(run.too_long_file, input_name)
    if not reasons:
        return todo
    records = [_record(rank, line, engine.Answer("", 0, 0, "", error=reasons[line.number]))
               for line in todo if line.number in reasons]
    ledger.append(records)
    for record in records:
        tally.count(record)
    log.warning("rank %d: %d line(s) too long for the model get an ERROR record", rank, len(records))
    return [line for line in todo if line.number not in reasons]


def _append(ledger: RecordLog, records: List[dict]) -> List[dict]:
    ledger.append(records)
    return records


class PerTile(Mode):
    """mode=per_tile: one rank per engine of each node (runner/layout.py: one GPU or tile each, or several for
    tensor_parallel_size > 1), each with its own offline engine and <input.path>/{rank}.in. An engine across
    nodes has one rank per node, and its group's first rank answers <input.path>/{engine}.in on the group's Ray
    cluster (ray_group)."""

    def node_layout(self) -> layout.Layout:
        return layout.layout_of(self.cfg)

    def procs_per_node(self) -> int:
        return len(self.node_layout().engines)

    @property
    def _spread(self) -> bool:
        """mode.assign=spread (a job file of a runner before `assign` has {rank}.in inputs)."""
        assign = self.cfg.mode.get("assign", Assign.by_rank)
        return Assign(getattr(assign, "value", assign)) == Assign.spread

    def ranks(self) -> int:
        """The workers that answer: one per engine of the job (an engine across nodes answers from its head)."""
        return self.node_layout().engines_in_job(self.cfg.nodes)

    def input_files(self) -> List[Path]:
        if self._spread:
            return reader_of(self.cfg).files()
        return input_paths(self.cfg, self.ranks())

    def work_items(self, run: RunDir) -> List[Item]:
        if self._spread:
            text = outputs.format_of(self.cfg) == OutputFormat.text
            return [run.spread_item(path, text) for path in self.input_files()]
        return [run.rank_item(path, rank) for rank, path in enumerate(self.input_files())]

    def weights(self) -> List[float]:
        """Each rank's share of the lines: its engine's devices (a TP 8 engine beside a TP 4 one gets twice)."""
        engines = self.node_layout().engines
        return [float(len(engines[e % len(engines)].devices) * engines[e % len(engines)].nodes)
                for e in range(self.ranks())]

    def spreads_inputs(self) -> bool:
        return self._spread

    def prepare(self, run: RunDir, dry: bool = False, indexes=None):
        """At launch, after the rerun checks (spread): the work items of every rank, written to work.json
        (`dry`: only planned, for the plan; `indexes`: the files' indexes from the launch's pass)."""
        if not self._spread:
            return None
        from runner import spread

        planned = spread.plan(self.cfg, run, self.input_files(), self.weights(), indexes)
        if not dry:
            spread.apply(self.cfg, run, planned, self.input_files())
        return planned

    def after_run(self, run: RunDir) -> None:
        """After every rank ended (the summary step): join each input's finished work items into its output."""
        if self._spread and run.job_file.is_file():
            from runner import spread

            files = self.input_files()
            spread.join_finished(self.cfg, run, files)
            spread.join_gone(self.cfg, run, files)

    def partial_outputs(self, run: RunDir, item: Item) -> List[Path]:
        if not self._spread:
            return super().partial_outputs(run, item)
        return [run.piece(item.input.name, *found) for found in self._pieces(run).get(item.input.name, [])]

    def _pieces(self, run: RunDir):
        if getattr(self, "_listed", None) is None:
            self._listed = run.pieces()  # one listing for all the files of a progress report
        return self._listed

    def check(self, files: List[Path]) -> None:
        """Print the layout at launch; idle devices are named, not left idle silently."""
        laid_out = self.node_layout()
        layout.check_ranks_per_node(self.cfg, laid_out)
        layout.check_heads(self.cfg, laid_out)
        layout.check_cpu_pipeline(self.cfg, laid_out)
        log.info("%s", layout.describe(self.cfg, laid_out))
        if laid_out.idle:
            log.warning("%d of %d %s of each node run no engine: cluster.engines=%s leaves them idle",
                        len(laid_out.idle), laid_out.devices_per_node, laid_out.unit, list(self.cfg.cluster.engines))

    def device_env(self, placement: Placement) -> Dict[str, str]:
        return layout.engine_env(self.cfg, self._engine(placement))

    def run(self, run: RunDir, placement: Placement, model_path: str, stats: WorkerStats) -> WorkerStats:
        mine = self._engine(placement)
        cfg = layout.with_engine_overrides(self.cfg, mine)
        log.info("rank %d: engine on %d device(s) %s%s, engine arguments %s", placement.rank, len(mine.devices),
                 layout.engine_env(self.cfg, mine) or "(no device mask)",
                 f" of each of {mine.nodes} nodes" if mine.nodes > 1 else "", engine.engine_args(cfg))
        answer = run_rank
        if self._spread:
            from runner.spread_rank import run_spread as answer
        if mine.nodes == 1:
            return answer(cfg, run, placement, model_path, stats)
        group = ray_group.engine_index(placement, mine)  # the engine's rank: it answers {group}.in or share `group`
        # a held node fails the job when its engine's output is missing; spread: the head's exit says it
        output = run.work_file if self._spread else run.rank_item(input_path(cfg, group), group).output
        return ray_group.run_node(cfg, run, placement, stats, self.node_layout(), output, lambda: answer(
            cfg, run, dataclasses.replace(placement, rank=group), model_path, stats))

    def _engine(self, placement: Placement) -> layout.Engine:
        engines = self.node_layout().engines
        if placement.local_rank >= len(engines):
            raise JobFailedError(f"local rank {placement.local_rank} has no engine: the layout has {len(engines)} "
                                 "per node; start the ranks with the launcher's processes per node")
        return engines[placement.local_rank]
