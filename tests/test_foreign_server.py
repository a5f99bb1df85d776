"""Only this run's server is trusted: a foreign HTTP service on the port, over real HTTP (no engine)."""

import asyncio
import socket

import pytest
from omegaconf import OmegaConf

from helpers.foreign import serve_foreign

from runner.client import FileClient, FileResult, Supervisor
from runner.errors import JobFailedError
from runner.readers import Entry, Request
from runner.record_log import RecordLog
from runner.schema import ServerPerNodeConfig
from runner.server import VllmServer, free_port
from runner.server_pool import ServerPool


def _server_on(port, tmp_path):
    server = VllmServer("/no/model", "smollm2_135m", port, {}, [], tmp_path / "serve.log", {})
    server.port = port
    return server


def test_a_port_that_answers_health_is_foreign_and_is_never_picked(tmp_path):
    foreign = serve_foreign()
    port = foreign.server_address[1]
    try:
        assert _server_on(port, tmp_path).probe() == "foreign"
        assert free_port(port, "127.0.0.1") != port
    finally:
        foreign.shutdown()
        foreign.server_close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert _server_on(closed, tmp_path).probe() == "down"


def test_a_first_port_near_or_past_the_last_one_is_refused_in_one_line_not_overflowed():
    """A host's or server's offset (mode.port + i x servers + j) can pass 65535: bind() then raised OverflowError,
    which no caller expects."""
    with pytest.raises(JobFailedError, match="past 65535"):
        free_port(65536, "127.0.0.1")
    try:
        assert 65530 <= free_port(65530, "127.0.0.1") <= 65535
    except JobFailedError as e:  # all six taken by other processes of this machine
        assert "in 65530-65535" in str(e)


def test_a_foreign_answer_mid_run_stops_the_host_naming_the_port_and_records_nothing(tmp_path):
    """The port answers 404 (another process holds it): no line gets a record, so a rerun answers them all."""
    foreign = serve_foreign()
    port = foreign.server_address[1]
    mode = OmegaConf.merge(OmegaConf.structured(ServerPerNodeConfig),
                           {"concurrency": 2, "retries": 3, "prompt_style": "completion"})
    server = _server_on(port, tmp_path)
    server.alive = lambda: True  # the host's own process still runs; someone else answers on its port
    supervisor = Supervisor(server, mode)
    ledger = RecordLog(tmp_path / "a.log.jsonl")

    async def answer():
        client = FileClient(ServerPool([supervisor], 2), mode, "smollm2_135m", {"max_tokens": 4})
        async with client.connected():
            await client.answer_file("a.txt", [Entry(n, f"line {n}", Request(f"line {n}")) for n in range(1, 6)], 0, ledger, FileResult(),
                                     asyncio.Event())

    try:
        asyncio.run(answer())
    finally:
        foreign.shutdown()
        foreign.server_close()
    assert f"port {port} answered HTTP 404" in supervisor.failed
    assert len(ledger.done()) == 0


def test_a_server_that_dies_mid_answer_reads_as_down_not_as_an_exception(tmp_path):
    """A server that dies while its /v1/models or /metrics answer is being read cuts the body short
    (http.client.IncompleteRead, which is no OSError): the probe must say "down" and the progress None. An
    exception there ended the server's watcher for good, and a host with one server then waited forever."""
    import http.server
    import threading

    class Cut(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"data": [')  # and the connection closes
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Cut)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        server = _server_on(httpd.server_address[1], tmp_path)
        assert server.probe(timeout_s=5) == "down"
        assert server.progress(timeout_s=5) is None
    finally:
        httpd.shutdown()
