"""The servers of one host and which of them takes the next request: the serving one with the fewest requests
outstanding (least outstanding requests).

mode.concurrency is per server: the host keeps concurrency x servers requests in flight, so a node of 6 engines
fills each engine's batch as one engine per node does. While a server restarts, its share goes to the others
(their queues hold it); once one has given up, the others take all; when none is left, the host stops and its
unanswered lines are left for a rerun (no record: nothing is lost, nothing answered twice).
"""

import asyncio
import contextlib
from typing import Iterator, List, Optional

from runner.client import Supervisor


class ServerPool:
    def __init__(self, supervisors: List[Supervisor], per_server: int):
        self.supervisors = supervisors
        # requests in flight on the whole host (held across a request's retries)
        self.slots = asyncio.Semaphore(per_server * len(supervisors))
        self.capacity = per_server * len(supervisors)
        # requests in flight now, and sent in all (a resent request counts again), per server
        self.outstanding = [0] * len(supervisors)
        self.sent = [0] * len(supervisors)
        self._changed = asyncio.Event()
        for i, supervisor in enumerate(supervisors):
            supervisor.on_change = self._wake
            supervisor.outstanding = lambda i=i: self.outstanding[i]

    @property
    def failed(self) -> Optional[str]:
        """Why the host can go on no longer: every server gave up (None while one of them serves or restarts)."""
        if all(s.failed for s in self.supervisors):
            return "; ".join(f"server {i}: {s.failed}" if len(self.supervisors) > 1 else s.failed
                             for i, s in enumerate(self.supervisors))
        return None

    def _wake(self) -> None:
        """A server came back or gave up: the requests waiting for one look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _pick(self) -> Optional[int]:
        serving = [i for i, s in enumerate(self.supervisors) if s.serving]
        return min(serving, key=self.outstanding.__getitem__, default=None)

    async def pick(self) -> Optional[Supervisor]:
        """The serving server with the fewest requests outstanding, once one serves; None when all gave up."""
        while (i := self._pick()) is None:
            if self.failed:
                return None
            changed = self._changed  # taken before waiting: a wake between the check and the wait is not lost
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), 5.0)  # (a safety net: every server's return wakes it)
        return self.supervisors[i]

    @contextlib.contextmanager
    def sending(self, supervisor: Supervisor) -> Iterator[None]:
        """Count a request as outstanding on its server while it is sent and answered."""
        i = self.supervisors.index(supervisor)
        self.outstanding[i] += 1
        self.sent[i] += 1
        try:
            yield
        finally:
            self.outstanding[i] -= 1
