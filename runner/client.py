"""The async OpenAI-API client of one host: answers every line of an input file with bounded concurrency, over the
host's servers (runner/server_pool.py: each request to the serving one with the fewest outstanding).

A Supervisor (runner/supervisor.py) watches each server: after `health_failures` failed checks in a row, when its
process is gone, or when it holds requests while its engine reports no step of work for `stall_s` (a hung engine
core: vLLM's /health does not ask the engine core, so it stays 200), it restarts it; requests that failed because
their server went away are sent again, to another server or to this one once it is back, without using up their
retries (those in flight when its engine died are resent in halves on a reserved server, so that a line that crashes
the engine is named by evidence: DEATHS_PER_LINE). A restart that fails in its start-up counts as one and is tried
again. Once every server of the host has given up (`max_restarts` in a row), no line gets a record: they are left
for a rerun. A 5xx answer from a server whose /health is then not good (its engine died) is the server's failure:
resent like a dropped connection. A 4xx answer (the request's fault, e.g. a prompt longer than the model's context)
is recorded as ERROR at once with the server's reason; other failures (5xx of a healthy server, timeouts) are
retried with exponential backoff, then recorded.
"""

import asyncio
import json
import logging
import resource
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, List, Optional, Protocol, Tuple

import aiohttp
from omegaconf import DictConfig

from runner.readers import Entry, Request
from runner.record_log import RecordLog
from runner.records import LINE, Record
from runner.supervisor import Supervisor
from runner.tally import Tally
from runner.walltime import near_end

log = logging.getLogger(__name__)

# this run's server knows its key (401 otherwise) and its model (404 otherwise): these come from another server
FOREIGN_STATUS = (401, 404)


def raise_open_file_limit(connections: int) -> int:
    """Let this process hold `connections` sockets beside its files: raise the soft limit on open files towards
    the hard one (1024 soft is common on compute nodes; each request in flight holds a socket). Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < wanted:
        log.warning("open-file limit %d (hard) is below mode.concurrency=%d + 256: requests may fail with "
                    "'Too many open files'; lower mode.concurrency or raise the limit (ulimit -Hn)", soft, connections)
    return soft


class Servers(Protocol):
    """What a FileClient asks of its host's servers (runner.server_pool.ServerPool, which imports Supervisor from
    here: named by this protocol, the two modules import each other no more)."""

    # requests in flight on the whole host, at most (held by `slots` across a request's retries)
    capacity: int
    slots: asyncio.Semaphore

    async def pick(self) -> Optional[Supervisor]:
        """The server for the next request (None: every server gave up)."""

    def sending(self, supervisor: Supervisor) -> ContextManager[Callable[[], bool]]:
        """Counts a request as outstanding on `supervisor` while it is sent and answered; yields alone(): no other
        request was in flight there since it was sent."""

    async def reserve(self) -> Optional[Supervisor]:
        """A drained server that takes no request but the caller's until release() (None: every server gave
        up)."""

    def release(self) -> None:
        """Ends the reservation."""


@dataclass
class FileResult:
    # the lines answered in this run
    tally: Tally = field(default_factory=Tally)
    # lines answered by an earlier run (found in the ledger)
    resumed: int = 0
    stopped_for_walltime: bool = False
    seconds: float = 0.0

    def add(self, other: "FileResult") -> None:
        """Sum a file into its host's result (not `seconds`: a host answers files overlapping in time)."""
        self.tally.add(other.tally)
        self.resumed += other.resumed
        self.stopped_for_walltime |= other.stopped_for_walltime


def _request(request: Request, model: str, sampling: Dict) -> Tuple[str, Dict]:
    """(endpoint, body): a chat through /v1/chat/completions, a prompt through /v1/completions; the request's own
    sampling values over the job's."""
    if request.messages is not None:
        return "/v1/chat/completions", {"model": model, "messages": request.messages, **sampling, **request.sampling}
    return "/v1/completions", {"model": model, "prompt": request.prompt, **sampling, **request.sampling}


def _success(base: Dict, prompt: str, body: Any) -> Dict:
    """The record of a 200 answer; ValueError (a failed attempt, retried) when the body holds no answer."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        usage = body.get("usage") or {}
        usage.get("prompt_tokens")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"HTTP 200 with no answer in its body ({type(e).__name__}: {e}): "
                         f"{json.dumps(body)[:300]}") from None
    return Record(base, prompt, text, prompt_tokens=usage.get("prompt_tokens", 0),
                  output_tokens=usage.get("completion_tokens", 0), finish_reason=choice.get("finish_reason")).to_json()


def _request_at_fault(status: int) -> bool:
    """A 4xx answer is the request's fault (too long, a bad value): not retried. 408 and 429 say "try again"."""
    return 400 <= status < 500 and status not in (408, 429)


def _server_message(body: str) -> str:
    """The reason in an OpenAI-style error body ({"error": {"message": ...}} or {"message": ...}), else the body."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body[:500]
    if isinstance(payload, dict):
        inner = payload.get("error")
        message = inner.get("message") if isinstance(inner, dict) else payload.get("message") or inner
        if message:
            return str(message)[:1000]
    return body[:500]


def _error(base: Dict, prompt: Optional[str], error: str, input: Optional[str] = None) -> Dict:
    return Record.failed(base, prompt, error, input).to_json()


# a line gets an ERROR record once its server died this often while it was the server's only request in flight:
# resent on and on, a line that crashes the engine would take down every server of its host, then of each host
# that takes the file over. A death with several lines in flight names none of them (an OOM kill, a neighbour's
# fault, or any one line): those lines (suspects) are resent in halves on a server reserved for them, with nothing
# else in flight there, until the death comes back with one line alone. A poison line among n in flight costs
# about log2(n) + 2 deaths; an innocent line is blamed only when its server dies twice while it is there alone
DEATHS_PER_LINE = 2
# lines named ERROR with no line answered between them, past which a server's deaths in rounds of suspects count
# toward mode.max_restarts again: two lines that crash the engine in one batch are named without the server given
# up, and a server that dies under every line (a broken device) gives up after a few lines, not the whole file
NAMED_IN_A_ROW = 2
# what one sending of a request came to, beside its record: its server went away (the request is resent, not a
# retry), its server's engine died (while the request was its only one in flight, or beside others), or it failed
# and may be retried
_WENT_AWAY, _DIED, _DIED_ALONE, _FAILED = "went away", "died", "died alone", "failed"


@dataclass
class _Suspect:
    """A line that was in flight when its server's engine died: resent with other suspects on a reserved server."""

    base: Dict
    prompt: str
    endpoint: str
    body: Dict
    why: str = ""
    # deaths of its server while it was the server's only request in flight
    alone: int = 0
    # where its record goes, and what is told once it has one (None: left for a rerun); set by answer_file
    ledger: Optional[RecordLog] = None
    result: Optional[FileResult] = None
    settled: Optional["asyncio.Future"] = None


class FileClient:
    def __init__(self, pool: Servers, mode: DictConfig, model: str, sampling: Dict,
                 too_long: Optional[Dict[str, Dict[int, str]]] = None):
        """pool: the host's servers; too_long: {file name: {line: reason}} of the lines the launch found too long
        (not sent: ERROR)."""
        self.too_long = too_long or {}
        self.pool = pool
        self.mode = mode
        self.model = model
        self.sampling = sampling
        self._session: Optional[aiohttp.ClientSession] = None
        # the host's suspects not yet resent, and the task that resends them (one at a time on the host)
        self._suspects: List[_Suspect] = []
        self._isolating: Optional[asyncio.Task] = None
        # lines named ERROR by deaths alone since a line was last answered: past NAMED_IN_A_ROW the server may be
        # broken (not the lines), and its deaths in rounds count toward max_restarts again until a line is
        # answered (it gives up with at most NAMED_IN_A_ROW + max_restarts lines named)
        self._named = 0

    async def answer(self, file_name: str, entry: Entry):
        """The entry's record; None when every server of this host is down for good (the entry is left for a
        rerun); a _Suspect when its engine died while it was in flight (answer_file resends it)."""
        base = {"file": file_name, LINE: entry.number, **entry.request.ids}
        if entry.error:
            return _error(base, None, entry.error, entry.raw)
        prompt = entry.request.text
        too_long = self.too_long.get(file_name, {}).get(entry.number)
        if too_long:
            return _error(base, prompt, too_long)
        endpoint, body = _request(entry.request, self.model, self.sampling)
        return await self._send(base, prompt, endpoint, body)

    async def _send(self, base: Dict, prompt: str, endpoint: str, body: Dict, pinned: Optional[Supervisor] = None):
        """The line's record; None when every server gave up; a _Suspect when its server's engine died while the
        line was in flight. `pinned`: the server to send it to (reserved for suspects), else the pool picks."""
        attempt, last_error = 0, ""
        while attempt <= self.mode.retries:
            outcome, last_error = await self._send_once(base, prompt, endpoint, body, pinned)
            if isinstance(outcome, dict) or outcome is None:
                return outcome  # a record, or None: every server of the host is down for good
            if outcome in (_DIED, _DIED_ALONE):
                return _Suspect(base, prompt, endpoint, body, last_error, int(outcome == _DIED_ALONE))
            if outcome == _WENT_AWAY:
                continue  # resent to a serving server (this one once it is back); not a retry
            attempt += 1
            if attempt <= self.mode.retries:
                await asyncio.sleep(self.mode.retry_backoff_s * 2 ** (attempt - 1))
        return _error(base, prompt, f"failed after {self.mode.retries} retries: {last_error}")

    def _suspect(self, suspect: _Suspect, ledger: RecordLog, result: FileResult) -> "asyncio.Future":
        """Queue a suspect for resending; the future is done once it has its record (or is left for a rerun)."""
        suspect.ledger, suspect.result = ledger, result
        suspect.settled = asyncio.get_running_loop().create_future()
        self._suspects.append(suspect)
        if self._isolating is None or self._isolating.done():
            self._isolating = asyncio.create_task(self._isolate_all())
        return suspect.settled

    async def _isolate_all(self) -> None:
        """Resend the host's suspects on a reserved server until none is left; those queued meanwhile (the other
        lines in flight at the same death come in while the server restarts) are taken once a server is
        reserved, as one group."""
        group: List[_Suspect] = []
        try:
            while self._suspects:
                if await self.pool.reserve() is None:  # every server gave up: left for a rerun
                    group, self._suspects = self._suspects, []
                    break
                group, self._suspects = self._suspects, []
                await self._bisect(group)
        except BaseException as e:
            for suspect in group + self._suspects:  # an answer_file waiting on them ends too
                if not suspect.settled.done():
                    suspect.settled.set_exception(e) if isinstance(e, Exception) else suspect.settled.cancel()
            raise
        finally:
            self.pool.release()
        for suspect in group:
            if not suspect.settled.done():
                suspect.settled.set_result(None)

    async def _bisect(self, group: List[_Suspect]) -> None:
        """Resend `group` in halves, one half at a time alone on the reserved server; the lines of a half that
        died are halved again, a line alone resent until it is answered or died alone DEATHS_PER_LINE times."""
        pending = [group]
        while pending:
            lines = pending.pop(0)
            for half in [lines] if len(lines) == 1 else [lines[:len(lines) // 2], lines[len(lines) // 2:]]:
                died = await self._round(half)
                if died:
                    pending.append(died)

    async def _round(self, half: List[_Suspect]) -> List[_Suspect]:
        """Send `half` to the reserved server with nothing else in flight there; records those answered, returns
        those whose server died under them."""
        supervisor = await self.pool.reserve()
        restarts = supervisor.restarts if supervisor else 0
        outcomes = await asyncio.gather(*(self._send(s.base, s.prompt, s.endpoint, s.body, supervisor)
                                          for s in half)) if supervisor else [None] * len(half)
        died = []
        if supervisor and self._named < NAMED_IN_A_ROW and any(isinstance(outcome, _Suspect) for outcome in outcomes):
            supervisor.excuse(restarts)
        for suspect, outcome in zip(half, outcomes):
            if isinstance(outcome, _Suspect):
                suspect.alone, suspect.why = suspect.alone + outcome.alone, outcome.why
                if suspect.alone < DEATHS_PER_LINE:
                    died.append(suspect)
                    continue
                self._named += 1
                outcome = _error(suspect.base, suspect.prompt, f"the server's engine died {suspect.alone} times "
                                 f"while this line was its only request (a request that crashes the engine?): "
                                 f"{suspect.why}")
            self._record(suspect, outcome)
        return died

    @staticmethod
    def _record(suspect: _Suspect, record: Optional[Dict]) -> None:
        if record is not None:  # None: every server gave up; the line is left for a rerun
            suspect.ledger.append([record])
            suspect.result.tally.count(record)
        suspect.settled.set_result(record)

    async def _send_once(self, base: Dict, prompt: str, endpoint: str, body: Dict,
                         pinned: Optional[Supervisor] = None) -> Tuple[Any, str]:
        """(record, '') for an answer or a refusal (4xx), (None, '') when every server gave up, else (_WENT_AWAY,
        _DIED, _DIED_ALONE or _FAILED, why)."""
        supervisor = pinned or await self.pool.pick()  # the serving server with the fewest requests outstanding
        if supervisor is None:
            return None, ""  # not the line's fault: no ERROR record, so a rerun answers it
        if not supervisor.serving:  # the reserved server went down before this line of its half was sent
            return _DIED, "the server went down"
        server = supervisor.server
        try:
            with self.pool.sending(supervisor) as alone:
                async with self._session.post(server.url + endpoint, json=body, headers=server.auth) as response:
                    if response.status == 200:
                        supervisor.restarts_in_a_row = self._named = 0
                        return _success(base, prompt, await response.json(content_type=None)), ""
                    if response.status in FOREIGN_STATUS:
                        supervisor.foreign(response.status)
                        return _WENT_AWAY, ""  # not the line's fault: sent to another server, or left for a rerun
                    error = f"HTTP {response.status}: {_server_message(await response.text())}"
                    if _request_at_fault(response.status):
                        return _error(base, prompt, error), ""  # the same request would be refused again
            if response.status >= 500 and await supervisor.server_went_away():
                return (_DIED_ALONE if alone() else _DIED), error  # the server failed, not the request
        except aiohttp.ClientConnectionError as e:
            error = f"{type(e).__name__}: {e}"
            if await supervisor.server_went_away():
                return (_DIED_ALONE if alone() else _DIED), error
        except (asyncio.TimeoutError, aiohttp.ClientError, ValueError) as e:
            error = f"{type(e).__name__}: {e}"
        return _FAILED, error

    @asynccontextmanager
    async def connected(self):
        """One HTTP session for the host's files and servers, with at most mode.concurrency requests in flight
        per server (each request carries its server's key)."""
        timeout = aiohttp.ClientTimeout(total=self.mode.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=self.pool.capacity)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            try:
                yield self
            finally:
                if self._isolating is not None:
                    self._isolating.cancel()

    async def answer_file(self, file_name: str, todo: List[Entry], resumed: int, ledger: RecordLog,
                          result: FileResult, handed_out: asyncio.Event) -> None:
        """Answer the lines `todo` (rerun.todo: no record yet, or only an ERROR one) into the ledger, counting
        into `result` (the caller's, so that an interrupted file is counted too); stops taking new lines near
        the walltime. `handed_out` is set once no line is left to send: the host then starts its next file, so
        the server's batch does not drain at a file's end."""
        result.resumed, started = resumed, time.monotonic()
        log.info("%s: started, %d lines, %d answered before", file_name, len(todo) + resumed, resumed)
        pending, suspects = iter(todo), []

        async def worker():
            try:
                for line in pending:
                    if near_end(self.mode.walltime_margin_s):
                        result.stopped_for_walltime = True
                        return
                    async with self.pool.slots:
                        record = await self.answer(file_name, line)
                    if isinstance(record, _Suspect):  # this worker goes on; the suspect is resent with others
                        suspects.append(self._suspect(record, ledger, result))
                        continue
                    if record is None:
                        return
                    ledger.append([record])
                    result.tally.count(record)
            finally:
                handed_out.set()

        reporter = asyncio.create_task(self._report_progress(file_name, result, len(todo), started))
        try:
            await asyncio.gather(*(worker() for _ in range(min(self.pool.capacity, len(todo)) or 1)))
            await asyncio.gather(*suspects)
        finally:
            reporter.cancel()
            result.seconds = time.monotonic() - started

    async def _report_progress(self, file_name: str, result: FileResult, todo: int, started: float) -> None:
        while True:
            await asyncio.sleep(self.mode.progress_every_s)
            log.info("%s: %s", file_name, result.tally.progress(todo, time.monotonic() - started))

