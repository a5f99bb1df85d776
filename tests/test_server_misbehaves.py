"""A server that misbehaves without dying, over real stand-in server processes (tests/helpers/stubs.py, no engine)
watched by the host's real supervisor: one stopped (SIGSTOP) mid-request, one that answers 200 with no answer in
the body. Every line gets one record; the host goes on."""

import signal

from helpers.stubs import Killer, answer, by_line, each_once, mode, stub_servers
from runner.record_log import RecordLog


def test_a_server_stopped_mid_request_is_restarted_and_the_lines_it_held_are_answered_once(tmp_path):
    """SIGSTOP of the server's process group with lines in flight: its /health stops answering, the supervisor
    restarts it (SIGKILL of the stopped session), and the lines it held are resent: every line SUCCESS, once."""
    servers = stub_servers(tmp_path, 1)
    prompts = [f"q{i}" for i in range(200)]
    prompts[50] = "SLOW:1 stopped-here"
    killer = Killer(servers[0], prompts[50], times=1, after=0.3, sig=signal.SIGSTOP)
    killer.start()
    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")
    try:
        result = answer(servers, mode(health_failures=2, stall_s=2), prompts, ledger)
    finally:
        killer.over.set()
        killer.join()
    assert killer.kills == 1 and result.gave_up is None, result.gave_up
    records = by_line(ledger)
    assert each_once(records, 200)
    assert all(r[0]["status"] == "SUCCESS" for r in records.values())
    assert servers[0].starts == 2


def test_a_200_answer_without_an_answer_in_it_is_that_lines_error_and_the_host_goes_on(tmp_path):
    """A 200 whose body holds no choice: that line is retried, then ERROR naming the body; the other lines are
    answered, each once (the KeyError/IndexError ended the host with a traceback)."""
    servers = stub_servers(tmp_path, 1)
    prompts = [f"q{i}" for i in range(40)]
    prompts[5] = "MALFORMED q5"
    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")
    result = answer(servers, mode(retries=1), prompts, ledger)
    records = by_line(ledger)
    assert each_once(records, 40)
    errors = {line: r[0]["error"] for line, r in records.items() if r[0]["status"] == "ERROR"}
    assert list(errors) == [6] and "choices" in errors[6], errors
    assert result.tally.errors == 1 and servers[0].starts == 1
