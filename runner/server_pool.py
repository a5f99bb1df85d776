"""The servers of one host and which of them takes the next request: the serving one with the fewest requests
outstanding (least outstanding requests).

mode.concurrency is per server: the host keeps concurrency x servers requests in flight, so a node of 6 engines
fills each engine's batch as one engine per node does. While a server restarts, its share goes to the others
(their queues hold it); once one has given up, the others take all; when none is left, the host stops and its
unanswered lines are left for a rerun (no record: nothing is lost, nothing answered twice). One server at a time
can be reserved for the lines in flight at a death (runner/client.py resends them in halves there, with nothing
else on that server, so that a death names its lines): the others take no request to it meanwhile.
"""

import asyncio
import contextlib
from typing import Callable, Iterator, List, Optional

from runner.supervisor import Supervisor


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
        # the server reserved for the suspects of a death (None: none is)
        self.reserved: Optional[int] = None
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

    def _pick(self, reserved_too: bool = False) -> Optional[int]:
        serving = [i for i, s in enumerate(self.supervisors) if s.serving and (reserved_too or i != self.reserved)]
        return min(serving, key=self.outstanding.__getitem__, default=None)

    async def _changes(self) -> None:
        changed = self._changed  # taken before waiting: a wake between the check and the wait is not lost
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), 5.0)  # (a safety net: every server's return wakes it)

    async def pick(self) -> Optional[Supervisor]:
        """The serving server with the fewest requests outstanding, once one serves (not the reserved one);
        None when all gave up."""
        while (i := self._pick()) is None:
            if self.failed:
                return None
            await self._changes()
        return self.supervisors[i]

    async def reserve(self) -> Optional[Supervisor]:
        """A server with no request in flight that takes none but the caller's until release() (chosen by
        _to_reserve), once it serves and has drained; None when all gave up."""
        while not self.failed:
            i = self.reserved = self._to_reserve()
            if i is not None and self.supervisors[i].serving and not self.outstanding[i]:
                return self.supervisors[i]
            await self._changes()
        return None

    def _to_reserve(self) -> Optional[int]:
        """A serving server with nothing in flight (the one reserved first); else the one reserved while it has
        not given up; else one restarting (empty once it is back, while the others keep their batches); else the
        serving one with the fewest outstanding (to be drained)."""
        live = [i for i, s in enumerate(self.supervisors) if not s.failed]
        empty = [i for i in live if self.supervisors[i].serving and not self.outstanding[i]]
        if empty:
            return self.reserved if self.reserved in empty else empty[0]
        if self.reserved in live:
            return self.reserved
        restarting = [i for i in live if not self.supervisors[i].serving]
        return restarting[0] if restarting else self._pick(reserved_too=True)

    def release(self) -> None:
        self.reserved = None
        self._wake()

    @contextlib.contextmanager
    def sending(self, supervisor: Supervisor) -> Iterator[Callable[[], bool]]:
        """Count a request as outstanding on its server while it is sent and answered. Yields alone(): True while
        no other request has been in flight on that server since this one was sent (the evidence that a death of
        the server is this request's)."""
        i = self.supervisors.index(supervisor)
        first = self.outstanding[i] == 0
        self.outstanding[i] += 1
        self.sent[i] += 1
        mark = self.sent[i]
        try:
            yield lambda: first and self.sent[i] == mark
        finally:
            self.outstanding[i] -= 1
            if i == self.reserved and not self.outstanding[i]:
                self._wake()  # reserve() waits for it to drain
