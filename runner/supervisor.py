"""The watcher of one `vllm serve` of a host (runner/client.py sends the host's requests): after
`health_failures` failed checks in a row, when its process is gone, or when it holds requests while its engine
reports no step of work for `stall_s` (a hung engine core: vLLM's /health does not ask the engine core, so it stays
200), it restarts it; a restart that fails in its own start-up is one of `max_restarts` in a row, tried again after
a backoff; past them the server gives up."""

import asyncio
import logging
import time
from typing import Callable, Optional, Tuple

from omegaconf import DictConfig

from runner.server import PORT_TRIES, VllmServer

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, server: VllmServer, mode: DictConfig):
        self.server = server
        self.mode = mode
        self.ready = asyncio.Event()
        self.ready.set()
        self.restarts = 0
        # restarts since the server last answered a line: max_restarts bounds these, so a server that comes back
        # and answers is not given up for deaths far apart (each poison line costs two)
        self.restarts_in_a_row = 0
        # deaths in rounds of a death's suspects resent on this server (runner/client.py): the next restarts do
        # not count in a row (the rounds narrow the suspects to the lines that crash the engine, a few deaths)
        self.excused = 0
        self.failed: Optional[str] = None
        # a request found it down before its watcher did (it answered 5xx or dropped the connection, and /health
        # is not good): it takes no request until a health check passes or it is restarted, so that a server that
        # fails every request at once (and so has the fewest outstanding) does not draw them all
        self.down = False
        # called when the server comes back or gives up (the host's ServerPool sets it)
        self.on_change: Callable[[], None] = lambda: None
        # this server's requests in flight now (the host's ServerPool sets it)
        self.outstanding: Callable[[], int] = lambda: 0
        # what the engine reported of its work at the last health check (VllmServer.progress), and when it last
        # changed (or the server was idle)
        self._progress: Optional[Tuple[str, ...]] = None
        self._progress_at = time.monotonic()

    @property
    def serving(self) -> bool:
        """Takes requests now: not restarting, not given up, its process alive (a killed server's requests go
        to the host's other servers at once, before the next health check restarts it)."""
        return self.ready.is_set() and not self.failed and not self.down and self.server.alive()

    async def watch(self) -> None:
        failures = 0
        while not self.failed:
            await asyncio.sleep(self.mode.health_interval_s)
            try:
                healthy = self.server.alive() and await asyncio.to_thread(self.server.healthy)
                stalled = healthy and await self._stalled()
            except Exception as e:  # noqa: BLE001 - a watcher that died would leave its server unwatched for good
                log.warning("health check of %s failed: %r", self.server.url, e)
                healthy, stalled = False, ""
            failures = 0 if healthy else failures + 1
            if healthy and self.down:
                self.down = False
                self.on_change()
            if not self.server.alive() or failures >= self.mode.health_failures or stalled:
                await self.restart("process exited" if not self.server.alive() else stalled or
                                   f"{failures} failed health checks")
                failures = 0

    async def _stalled(self) -> str:
        """Why the server counts as hung ('' while it is not): it holds requests, but its engine has reported no
        step of work (no token generated, no prefill chunk, no request taken) for mode.stall_s. /health does not
        tell: vLLM's API process answers it without its engine core."""
        busy = self.outstanding()
        progress = await asyncio.to_thread(self.server.progress) if busy and self.mode.stall_s else None
        now = time.monotonic()
        if progress is None or progress != self._progress:
            self._progress, self._progress_at = progress, now
            return ""
        if now - self._progress_at < self.mode.stall_s:
            return ""
        return f"no engine step in {now - self._progress_at:.0f} s with {busy} request(s) in flight (hung)"

    async def restart(self, why: str) -> None:
        self.ready.clear()
        try:
            await self._restart(why)
        finally:
            self.down = False
            self.ready.set()
            self.on_change()

    async def _restart(self, why: str) -> None:
        """Start the server again; a start that fails (the new process exits or never answers: a device the dead
        engine still holds, a transient fault) is one restart of max_restarts in a row, tried again after a
        backoff (mode.retry_backoff_s, doubling); the last failure's cause names why the server gave up."""
        if self.excused:
            self.excused -= 1
            self.restarts_in_a_row -= 1  # (counted again below: this restart leaves the count as it was)
        while self.restarts_in_a_row < self.mode.max_restarts:
            self.restarts += 1
            self.restarts_in_a_row += 1
            self._progress = None  # a new engine counts from 0
            log.warning("restarting vllm serve (%s), restart %d of %d in a row", why, self.restarts_in_a_row,
                        self.mode.max_restarts)
            await asyncio.to_thread(self.server.stop, self.mode.stop_grace_s)
            failure = await self._start()
            if not failure:
                return
            why = f"its restart failed: {failure}"
            if self.restarts_in_a_row < self.mode.max_restarts:
                await asyncio.sleep(self.mode.retry_backoff_s * 2 ** (self.restarts_in_a_row - 1))
        self.failed = f"server down ({why}) after {self.restarts_in_a_row} restart(s) in a row"
        log.error("%s (%s); giving up on it", self.failed, self.server.url)
        await asyncio.to_thread(self.server.stop, 0)  # a hung server holds its devices no longer

    async def _start(self) -> str:
        """Spawn the server and wait until it answers; '' once it does, else why it did not."""
        try:
            for _ in range(PORT_TRIES):
                self.server.spawn()  # from this (the main) thread, which lives as long as the host
                if await asyncio.to_thread(self.server.wait_ready, self.mode.start_timeout_s):
                    return ""
            return f"{PORT_TRIES} free ports were taken before it bound one"
        except Exception as e:  # noqa: BLE001 - any start failure is tried again, up to max_restarts
            return str(e)

    def excuse(self, restarts_before: int) -> None:
        """A death in a round of a death's suspects (runner/client.py) is not one in a row: it narrows them to
        the line that crashes the engine in a few deaths. `restarts_before`: this server's restarts when the round
        was sent (the restart for this death may have begun already, or may come)."""
        if self.restarts > restarts_before:
            self.restarts_in_a_row = max(0, self.restarts_in_a_row - 1)
        else:
            self.excused += 1

    def foreign(self, status: int) -> None:
        """An answer that this run's server cannot give (it knows the key and the model): the port is not ours."""
        self.failed = (f"port {self.server.port} answered HTTP {status}, not as this run's server (another "
                       "process holds the port)")
        log.error("%s; sending no more requests there", self.failed)
        self.on_change()

    async def server_went_away(self) -> bool:
        """After a connection error: True when the server is down (the request should wait and be resent)."""
        if not self.ready.is_set():
            return True
        if not (self.server.alive() and await asyncio.to_thread(self.server.healthy)):
            self.down = self.ready.is_set()  # (a restart begun meanwhile clears it when done)
            return True
        return False
