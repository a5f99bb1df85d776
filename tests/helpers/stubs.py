"""Hosts over stand-in server processes (tests/helpers/stub_server.py): real processes, started, watched and
restarted by the host's real VllmServer and Supervisor code, answering through the real FileClient; no engine."""

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

from omegaconf import OmegaConf

from runner import host_servers
from runner.client import FileClient, FileResult, Supervisor
from runner.readers import Entry, Request
from runner.schema import ServerPerNodeConfig
from runner.server import VllmServer
from runner.server_pool import ServerPool

STUB = Path(__file__).parent / "stub_server.py"


def mode(**values):
    mode = OmegaConf.structured(ServerPerNodeConfig)
    defaults = dict(health_interval_s=0.2, health_failures=2, stop_grace_s=1.0, start_timeout_s=30.0,
                    retry_backoff_s=0.1, concurrency=4)
    for key, value in {**defaults, **values}.items():
        setattr(mode, key, value)
    return mode


def stub_servers(tmp_path, count, env=None):
    servers = []
    for i in range(count):
        server = VllmServer("/no/model", "m", 0, {}, [], tmp_path / f"server{i}" / "vllm-serve.log", env or {})
        server.log_path.parent.mkdir(parents=True)
        server.argv = [sys.executable, str(STUB), "--config", str(server.config_path)]
        servers.append(server)
    return servers


def answer(servers, mode, prompts, ledger):
    """Answer `prompts` (lines 1..n) over the started `servers`, watched by their supervisors; the FileResult."""

    async def run():
        supervisors = [Supervisor(server, mode) for server in servers]
        pool = ServerPool(supervisors, mode.concurrency)
        client = FileClient(pool, mode, "m", {})
        watchers = [asyncio.create_task(s.watch()) for s in supervisors]
        result = FileResult()
        try:
            async with client.connected():
                entries = [Entry(i, p, Request(p)) for i, p in enumerate(prompts, 1)]
                await asyncio.wait_for(client.answer_file("q.txt", entries, 0, ledger, result, asyncio.Event()), 300)
        finally:
            for watcher in watchers:
                watcher.cancel()
        result.gave_up = pool.failed  # why the host's servers all gave up (None: they did not)
        return result

    host_servers.start_all(servers, mode.start_timeout_s)
    try:
        return asyncio.run(run())
    finally:
        host_servers.stop_all(servers, 1.0)


def by_line(ledger):
    records = {}
    for record in ledger.records():
        records.setdefault(record["line"], []).append(record)
    return records


def each_once(records, lines: int) -> bool:
    """Lines 1..lines each have exactly one record (by_line's result)."""
    return sorted(records) == list(range(1, lines + 1)) and all(len(r) == 1 for r in records.values())


class Killer(threading.Thread):
    """Something beside the run (the OOM killer, a neighbour) that SIGKILLs a server `times` times, each `after` s
    after the server logged a request for `prompt`."""

    def __init__(self, server, prompt, times, after, sig=signal.SIGKILL):
        super().__init__(daemon=True)
        self.server, self.prompt, self.times, self.after, self.sig = server, prompt, times, after, sig
        self.before_kill = lambda: None  # called right before each kill
        self.kills, self.over = 0, threading.Event()

    def run(self):
        seen = 0
        while self.kills < self.times and not self.over.wait(0.05):
            text = self.server.log_path.read_text() if self.server.log_path.exists() else ""
            sent = text.count(f"received {self.prompt}\n")
            if sent > seen:
                seen = sent
                time.sleep(self.after)
                proc = self.server.proc
                if proc is not None and proc.poll() is None:
                    self.before_kill()
                    os.killpg(proc.pid, self.sig)
                    self.kills += 1


