"""Which server of a host takes the next request (runner/server_pool.py), over real processes standing in for
the servers' process groups (no engine: the routing reads only whether each process lives, restarts and gives
up); the real servers are in tests/test_servers_per_host.py."""

import asyncio
import subprocess

from omegaconf import OmegaConf

from runner.client import Supervisor
from runner.schema import ServerPerNodeConfig
from runner.server import VllmServer
from runner.server_pool import ServerPool


def _supervisors(tmp_path, count):
    mode = OmegaConf.structured(ServerPerNodeConfig)
    supervisors = []
    for i in range(count):
        server = VllmServer("/no/model", "m", 0, {}, [], tmp_path / f"serve{i}.log", {})
        server.proc = subprocess.Popen(["sleep", "60"])
        supervisors.append(Supervisor(server, mode))
    return supervisors


def test_requests_go_to_the_least_outstanding_serving_server_and_none_once_all_gave_up(tmp_path):
    supervisors = _supervisors(tmp_path, 3)
    first, second, third = supervisors

    async def route():
        pool = ServerPool(supervisors, per_server=4)
        assert pool.capacity == 12
        with pool.sending(await pool.pick()), pool.sending(await pool.pick()):
            assert pool.outstanding == [1, 1, 0] and await pool.pick() is third
            third.server.proc.kill()
            third.server.proc.wait()
            assert await pool.pick() is first  # a dead server takes nothing, before any health check
        first.ready.clear()  # restarting
        assert await pool.pick() is second
        second.failed = "gave up"
        waiting = asyncio.create_task(pool.pick())  # no server serves: the request waits for one
        await asyncio.sleep(0.1)
        assert not waiting.done()
        first.ready.set()
        first.on_change()  # what a finished restart calls
        assert await asyncio.wait_for(waiting, 1) is first
        first.failed = third.failed = "gave up"
        assert await pool.pick() is None and "server 1: gave up" in pool.failed
        assert pool.sent == [1, 1, 0]

    try:
        asyncio.run(route())
    finally:
        for s in supervisors:
            s.server.proc.kill()
            s.server.proc.wait()


def test_a_line_whose_server_dies_under_it_twice_gets_an_error_record_not_endless_resends(tmp_path):
    """A line that crashes the engine: its server answers 500 and its /health then fails (the engine died), which
    resends the line without using a retry. Resent on and on, it took down every server of the host, then those
    of each host that took the file over. Two real HTTP servers that die that way under each request: the line
    gets its ERROR record after two deaths (it waited forever for a serving server before)."""
    import http.server
    import json
    import threading

    from runner.client import DEATHS_PER_LINE, FileClient, FileResult
    from runner.readers import Entry, Request
    from runner.record_log import RecordLog

    class Dying(http.server.BaseHTTPRequestHandler):
        def _answer(self, status, body=b""):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/v1/models":
                return self._answer(200, json.dumps({"data": [{"id": "m"}]}).encode())
            self._answer(503)  # /health: the engine is dead

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(500, b'{"error": {"message": "EngineCore encountered an issue"}}')

        def log_message(self, *args):
            pass

    stubs = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dying) for _ in range(2)]
    for stub in stubs:
        threading.Thread(target=stub.serve_forever, daemon=True).start()
    supervisors = _supervisors(tmp_path, 2)
    for supervisor, stub in zip(supervisors, stubs):
        supervisor.server.port = stub.server_address[1]
    mode = OmegaConf.structured(ServerPerNodeConfig)

    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")

    async def send():
        client = FileClient(ServerPool(supervisors, per_server=4), mode, "m", {})
        async with client.connected():
            result = FileResult()
            await asyncio.wait_for(client.answer_file("q.txt", [Entry(1, "boom", Request("boom"))], 0, ledger,
                                                      result, asyncio.Event()), 30)
            return result

    try:
        result = asyncio.run(send())
        records = list(ledger.records())
        assert len(records) == 1 and result.tally.errors == 1, records
        record = records[0]
        assert record["status"] == "ERROR" and f"died {DEATHS_PER_LINE} times" in record["error"], record
    finally:
        for stub in stubs:
            stub.shutdown()
        for s in supervisors:
            s.server.proc.kill()
            s.server.proc.wait()
