"""A server whose restart fails in its own start-up (the new process exits before it answers: a device not yet
freed by the dead engine, a transient failure), over real stand-in server processes (tests/helpers/stubs.py, no
engine) restarted by the host's real supervisor: a failed start is one restart of mode.max_restarts, tried again
after a short backoff, and only max_restarts failures in a row give the server up, naming the cause."""

from helpers.stubs import Killer, answer, by_line, each_once, mode, stub_servers
from runner.record_log import RecordLog


def _killed_once_then_failing_starts(tmp_path, failing_starts, max_restarts):
    """300 lines; the server is killed once, after which its next `failing_starts` starts fail."""
    counter = tmp_path / "failing-starts"
    counter.write_text("0")
    servers = stub_servers(tmp_path, 1, env={"STUB_FAIL_STARTS": str(counter)})
    prompts = [f"q{i}" for i in range(300)]
    prompts[100] = "SLOW:0.5 killed-here"
    killer = Killer(servers[0], prompts[100], times=1, after=0.2)
    killer.before_kill = lambda: counter.write_text(str(failing_starts))
    killer.start()
    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")
    try:
        result = answer(servers, mode(max_restarts=max_restarts, retry_backoff_s=0.2), prompts, ledger)
    finally:
        killer.over.set()
        killer.join()
    assert killer.kills == 1
    return servers[0], result, by_line(ledger)


def test_a_restart_that_fails_while_starting_is_tried_again_and_every_line_is_answered_once(tmp_path):
    """The first restart's process exits while starting: the server gave up for good (with max_restarts=3 left
    unused) and the host left its lines unanswered; now it is started again and answers every line, once."""
    server, result, records = _killed_once_then_failing_starts(tmp_path, failing_starts=1, max_restarts=3)
    assert result.gave_up is None, result.gave_up
    assert each_once(records, 300)
    assert all(r[0]["status"] == "SUCCESS" for r in records.values())
    assert server.starts == 3  # the first start, the failed restart, the one that serves


def test_restarts_failing_max_restarts_times_in_a_row_give_up_naming_the_cause_and_leave_lines_for_a_rerun(
        tmp_path):
    """Every restart fails: after max_restarts=2 in a row the server gives up, in one line naming the last
    start's error (the server's log), and the lines it did not answer have no record (a rerun answers them)."""
    server, result, records = _killed_once_then_failing_starts(tmp_path, failing_starts=100, max_restarts=2)
    assert result.gave_up and "RuntimeError: stub engine failed to start" in result.gave_up, result.gave_up
    assert "2 restart(s) in a row" in result.gave_up and "\n" not in result.gave_up
    assert server.starts == 3  # the first start and two failed restarts
    assert 100 <= len(records) < 300 and all(len(r) == 1 for r in records.values())
    assert all(r[0]["status"] == "SUCCESS" for r in records.values())
