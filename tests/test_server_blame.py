"""Whom a server's death is blamed on, over real server processes (tests/helpers/stubs.py: no engine; a line
with POISON in it kills its server, as a line that crashes vLLM would) restarted by the host's real supervisors:
a line gets its ERROR record only when its server died twice while it was the server's only request; the lines in
flight at a death are resent in halves (bisection), not one at a time."""

import time

from helpers.stubs import Killer, answer, by_line, each_once, mode, stub_servers
from runner.record_log import RecordLog


def test_two_deaths_from_outside_while_an_innocent_line_is_in_flight_do_not_make_it_an_error(tmp_path):
    """A slow innocent line is in flight, beside others, when the server is SIGKILLed from outside, and again when
    it is resent: no line crashed the server, so every line ends SUCCESS, once (it was blamed: ERROR "died 2
    times", though it was never the server's only request at a death)."""
    servers = stub_servers(tmp_path, 1)
    prompts = [f"q{i}" for i in range(300)]
    prompts[1] = "SLOW:2 innocent"
    killer = Killer(servers[0], "SLOW:2 innocent", times=2, after=0.5)
    killer.start()
    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")
    try:
        result = answer(servers, mode(), prompts, ledger)
    finally:
        killer.over.set()
        killer.join()
    assert killer.kills == 2
    records = by_line(ledger)
    assert each_once(records, 300)
    errors = {line: r[0]["error"] for line, r in records.items() if r[0]["status"] == "ERROR"}
    assert errors == {} and result.tally.errors == 0, errors
    assert servers[0].starts == 3  # restarted after each death


def test_a_poison_line_among_many_in_flight_is_found_by_halves_and_is_the_only_error(tmp_path):
    """64 slow lines (1 s each) in flight when one of them kills its server: resent one at a time, the 63 others
    took over a minute after the death; in halves, a few rounds. The poison line alone ends ERROR (it died twice
    as the server's only request), every other line SUCCESS once, and the server dies about log2(64) + 2 times."""
    servers = stub_servers(tmp_path, 1)
    prompts = [f"SLOW:1 q{i}" for i in range(192)]
    prompts[80] = "SLOW:1 POISON"
    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")
    started = time.monotonic()
    result = answer(servers, mode(concurrency=64), prompts, ledger)
    took = time.monotonic() - started
    records = by_line(ledger)
    assert each_once(records, 192)
    errors = {line: r[0]["error"] for line, r in records.items() if r[0]["status"] == "ERROR"}
    assert list(errors) == [81] and "died 2 times" in errors[81], errors
    assert result.tally.errors == 1
    assert servers[0].starts - 1 <= 9, servers[0].starts  # deaths: the first, one a halving, two alone
    assert took < 50, took


def test_a_poison_line_on_a_host_of_two_servers_is_the_only_error_and_the_other_server_answers_meanwhile(tmp_path):
    """Two servers: the suspects of a death are resent on one reserved server while the other answers the rest;
    only the poison line ends ERROR, every line has one record, both servers answered lines."""
    servers = stub_servers(tmp_path, 2)
    prompts = [f"SLOW:0.3 q{i}" for i in range(120)]
    prompts[20] = "SLOW:0.3 POISON"
    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")
    result = answer(servers, mode(concurrency=8), prompts, ledger)
    records = by_line(ledger)
    assert each_once(records, 120)
    errors = [line for line, r in records.items() if r[0]["status"] == "ERROR"]
    assert errors == [21] and result.tally.errors == 1 and result.gave_up is None, errors
    answered = [s.log_path.read_text().count("received SLOW:0.3 q") for s in servers]
    assert min(answered) > 0 and max(answered) >= 60, answered  # one went on while the other was held


def test_two_poison_lines_in_flight_together_are_both_errors_and_the_server_is_not_given_up(tmp_path):
    """Two of the four lines in flight kill the server: the halvings and the deaths alone take more deaths in a row
    than mode.max_restarts=2 (the server gave up, and each rerun again); deaths of a round that narrows the
    suspects do not count, so both poison lines end ERROR and every other line SUCCESS, once."""
    servers = stub_servers(tmp_path, 1)
    prompts = [f"SLOW:0.2 q{i}" for i in range(40)]
    prompts[8], prompts[9] = "SLOW:0.5 POISON one", "SLOW:0.5 POISON two"
    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")
    result = answer(servers, mode(concurrency=4, max_restarts=2), prompts, ledger)
    assert result.gave_up is None, result.gave_up
    records = by_line(ledger)
    assert each_once(records, 40)
    assert [line for line, r in records.items() if r[0]["status"] == "ERROR"] == [9, 10]


def test_a_server_that_dies_under_every_line_is_given_up_and_does_not_name_the_whole_file(tmp_path):
    """Every request kills the server (a broken device, not the lines): once two lines are named ERROR with no
    line answered since, its deaths count toward max_restarts again, and the server gives up with a few lines
    ERROR (at most NAMED_IN_A_ROW + max_restarts), not the whole file; the others get no record (a rerun answers
    them)."""
    servers = stub_servers(tmp_path, 1)
    prompts = [f"POISON q{i}" for i in range(20)]
    ledger = RecordLog(tmp_path / "q.txt.log.jsonl")
    result = answer(servers, mode(concurrency=4, max_restarts=2), prompts, ledger)
    assert result.gave_up
    records = by_line(ledger)
    assert len(records) <= 4 and all(r[0]["status"] == "ERROR" for r in records.values()), records
