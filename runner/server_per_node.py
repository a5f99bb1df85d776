"""mode=server_per_node, one host: start its `vllm serve` processes (one per engine of the node's layout,
runner/host_servers.py), answer input files from the shared queue over all of them, stop them.

Answers are appended to out/<file>.log.jsonl as each arrives (the resume ledger); out/<file>.jsonl appears,
complete and in line order, when every line of the file has a record. Server logs live in node-local scratch
and are copied to logs/host<rank>/ at the end (server<i>/ each when the host runs several), also when the host
fails.
"""

import asyncio
import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import List

from omegaconf import DictConfig, OmegaConf

from runner import cpu_bind, host_servers, layout, preflight, rerun
from runner.client import FileClient, FileResult, raise_open_file_limit
from runner.supervisor import Supervisor
from runner.errors import ConfigError, JobFailedError
from runner.job import typed_mode
from runner.run_dir import Item, RunDir
from runner.mode import Mode
from runner.schema import OnTooLong
from runner.server import VllmServer
from runner.server_pool import ServerPool
from runner.stats import WorkerStats
from runner.topology import Placement
from runner.walltime import near_end
from runner.work_queue import FileQueue, attempt_id, list_inputs, prune_attempts

log = logging.getLogger(__name__)

# the flags of `vllm serve` the runner sets itself: the client finds its server by these
_SERVER_OWN_FLAGS = {"--port", "--host", "--served-model-name", "--model", "--api-key", "--config"}


def _scratch_tag(run: RunDir) -> str:
    return hashlib.sha256(str(run.root).encode()).hexdigest()[:8]


def _scratch(cfg: DictConfig, run: RunDir, rank: int) -> Path:
    """This host's node-local folder, its own to this run and attempt (job id, or the local launch's id)."""
    attempt = hashlib.sha256(attempt_id().encode()).hexdigest()[:8]
    return Path(cfg.mode.scratch_dir) / f"runner-{_scratch_tag(run)}-{attempt}-host{rank}"


def _clear_earlier_scratch(cfg: DictConfig, run: RunDir, rank: int, mine: Path) -> None:
    """Folders an earlier, dead attempt of this run left on this node (no other attempt is alive: this one holds
    the run's lock); their server logs are kept under logs/host<rank>/earlier/."""
    for old in Path(cfg.mode.scratch_dir).glob(f"runner-{_scratch_tag(run)}-*-host{rank}"):
        if old != mine:
            shutil.copytree(old, run.host_logs(rank) / "earlier" / old.name, dirs_exist_ok=True)
            shutil.rmtree(old, ignore_errors=True)


async def _serve_files(cfg: DictConfig, run: RunDir, queue, first: Path, servers: List[VllmServer],
                       stats: WorkerStats, host: FileResult) -> None:
    """Answer `first`, then each file the queue hands this host. The next file is started as soon as the current
    one has no line left to send, so the servers' batches stay full across file ends."""
    raise_open_file_limit(cfg.mode.concurrency * len(servers))
    supervisors = [Supervisor(server, cfg.mode) for server in servers]
    pool = ServerPool(supervisors, cfg.mode.concurrency)
    too_long = preflight.read_all(run.too_long_file) if cfg.mode.on_too_long == OnTooLong.record else {}
    client = FileClient(pool, cfg.mode, cfg.model.name, OmegaConf.to_container(cfg.sampling), too_long)
    watchers = [asyncio.create_task(supervisor.watch()) for supervisor in supervisors]
    files, started, running = queue.take(), time.monotonic(), []
    try:
        async with client.connected():
            input_file = first
            while input_file is not None:
                result, handed_out = FileResult(), asyncio.Event()
                stats.files.append(input_file.name)
                task = asyncio.create_task(_answer_file(cfg, client, queue, input_file, run, result, handed_out,
                                                        host))
                running.append(task)
                await _first_of(task, handed_out)
                if pool.failed or result.stopped_for_walltime or near_end(cfg.mode.walltime_margin_s):
                    break
                input_file = await asyncio.to_thread(next, files, None)  # may wait for other hosts' files
            await asyncio.gather(*running)
    finally:
        await _end_watchers(watchers, supervisors, cfg.mode.stop_grace_s)
        queue.stop_waiting()  # a cancelled host does not sit out the queue's poll interval in its thread
        host.seconds = time.monotonic() - started
        stats.restarts, stats.requests = sum(s.restarts for s in supervisors), list(pool.sent)
    if pool.failed:
        raise JobFailedError(f"host {run.root}: {pool.failed}; rerun the same command to resume")
    for i, supervisor in enumerate(supervisors):
        if supervisor.failed:  # the others answered its lines
            log.error("server %d of this host gave up (%s); the host's other servers answered its share", i,
                      supervisor.failed)


async def _end_watchers(watchers: List[asyncio.Task], supervisors: List[Supervisor], grace_s: float) -> None:
    """Stop watching; a server still restarting is stopped now, so that its start (in a thread) ends too and the
    host does not wait out its start timeout once its files are done."""
    restarting = [s.server for s in supervisors if not s.ready.is_set()]  # (a cancelled restart sets ready)
    for watcher in watchers:
        watcher.cancel()
    if restarting:
        await asyncio.to_thread(host_servers.stop_all, restarting, grace_s)


async def _first_of(task: asyncio.Task, event: asyncio.Event) -> None:
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def _answer_file(cfg: DictConfig, client: FileClient, queue: FileQueue, input_file: Path, run: RunDir,
                       result: FileResult, handed_out: asyncio.Event, host: FileResult) -> None:
    try:
        item = run.file_item(input_file)
        lines, ledger = await asyncio.to_thread(rerun.begin, cfg, item, None)
        if ledger is None:
            result.resumed = len(lines)
            queue.finished(input_file)
            return
        todo = rerun.todo(lines, ledger, cfg)
        await client.answer_file(input_file.name, todo, len(lines) - len(todo), ledger, result, handed_out)
        if await asyncio.to_thread(rerun.finish, cfg, item, lines, ledger):
            queue.finished(input_file)
            log.info("%s: %d lines answered (%d errors, %d before) in %.1f s", input_file.name,
                     result.tally.answered, result.tally.errors, result.resumed, result.seconds)
        else:
            log.warning("%s: %d of %d lines done; the rest are left for a rerun", input_file.name,
                        len(ledger.done()), len(lines))
    finally:
        handed_out.set()
        host.add(result)


def run_host(cfg: DictConfig, run: RunDir, placement: Placement, model_path: str,
             stats: WorkerStats) -> WorkerStats:
    """Answer files from the queue, filling `stats` (the worker writes them, also when this fails)."""
    started = time.monotonic()
    stale = cfg.mode.claim_stale_after_s
    if placement.rank == 0:  # finished files with lines appended or ERROR records to retry become claimable
        rerun.reopen_finished(cfg, ServerPerNode(cfg).work_items(run))
    queue = FileQueue(list_inputs(cfg), run.out, run.claims, stale_after_s=stale,
                      poll_s=max(1.0, min(30.0, stale / 10)), host=placement.rank, hosts=placement.world_size)
    if placement.rank == 0:  # one host per job clears the claims of earlier attempts
        prune_attempts(run.claims, queue.claims.name, stale)
    with queue.heartbeats():
        return _run_host(cfg, run, placement, model_path, queue, started, stats)


def _run_host(cfg: DictConfig, run: RunDir, placement: Placement, model_path: str, queue: FileQueue,
              started: float, stats: WorkerStats) -> WorkerStats:
    first = next(queue.take(), None)
    stats.name, stats.host, stats.files = f"host{placement.rank}", placement.hostname, []
    if first is None:
        log.info("host %d: no input file left for this host; not starting a server", placement.rank)
        stats.wall_s = round(time.monotonic() - started, 3)
        return stats
    scratch = _scratch(cfg, run, placement.rank)
    _clear_earlier_scratch(cfg, run, placement.rank, scratch)
    servers = host_servers.host_servers(cfg, placement, model_path, scratch)
    stats.concurrency, host = cfg.mode.concurrency, FileResult()
    try:
        stats.engine_start_s = round(host_servers.start_all(servers, cfg.mode.start_timeout_s), 3)
        asyncio.run(_serve_files(cfg, run, queue, first, servers, stats, host))
    finally:
        host_servers.stop_all(servers, cfg.mode.stop_grace_s)
        shutil.copytree(scratch, run.host_logs(placement.rank), dirs_exist_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
        stats.count(host.tally)
        stats.prompts, stats.resumed = host.tally.answered + host.resumed, host.resumed
        stats.generate_s, stats.stopped_for_walltime = round(host.seconds, 3), host.stopped_for_walltime
        stats.wall_s = round(time.monotonic() - started, 3)
    if host.stopped_for_walltime:
        raise JobFailedError(f"host {placement.rank} stopped near the walltime; rerun the same command to resume")
    return stats


class ServerPerNode(Mode):
    """mode=server_per_node: one host process per node, serving its GPUs with one `vllm serve` per engine of the
    node's layout, taking input files from a queue all hosts share."""

    def procs_per_node(self) -> int:
        return 1

    def input_files(self) -> List[Path]:
        return list_inputs(self.cfg)

    def work_items(self, run: RunDir) -> List[Item]:
        return [run.file_item(path) for path in self.input_files()]

    def resolve(self) -> None:
        super().resolve()
        self.cfg.mode.scratch_dir = str(Path(self.cfg.mode.scratch_dir).expanduser().resolve())

    def check(self, files: List[Path]) -> None:
        mode = typed_mode(self.cfg.mode)
        self._check_layout()
        own = sorted({arg.split("=")[0] for arg in mode.serve_args} & _SERVER_OWN_FLAGS)
        if own:
            raise ConfigError(f"mode.serve_args sets {own}, which the runner sets for its own client (port and key "
                              "per run): leave them out (engine arguments go in model.engine or +engine.*)")

    def _check_layout(self) -> None:
        """Print the servers of each host at launch, as per_tile prints its ranks."""
        laid_out = host_servers.host_layout(self.cfg)
        layout.check_ranks_per_node(self.cfg, laid_out)
        layout.check_heads(self.cfg, laid_out)
        cpu_bind.node_blocks(self.cfg, len(laid_out.engines))  # a node too small for its servers is refused now
        log.info("%s (one vllm serve each)", layout.describe(self.cfg, laid_out))

    def run(self, run: RunDir, placement: Placement, model_path: str, stats: WorkerStats) -> WorkerStats:
        return run_host(self.cfg, run, placement, model_path, stats)
