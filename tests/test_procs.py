"""Nothing outlives the job, nothing foreign is trusted: one long server_per_node job on the CPU whose processes
are killed (-9) in turn, while a foreign HTTP server sits on the port the runner would try first."""

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from helpers.cli import ROOT, run_runner
from helpers.foreign import serve_foreign
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, run_shm_files, shm_files, tagged_env, wait_for

pytestmark = pytest.mark.engine

LINES = [f"Write a long story about the number {i}." for i in range(120)]


def _server_tree(job, tag, not_api=None):
    """(guard, API server, engine core) pids of the run's server once exactly one of each is up (and the API
    server is not `not_api`)."""

    def current():
        assert job.poll() is None, "the job ended early"
        found = {"guard": [], "api": [], "core": []}
        for pid, argv in run_processes(tag).items():
            kind = ("guard" if "runner.server_guard" in argv else "api" if "vllm.entrypoints.openai.api_server" in argv
                    else "core" if argv[0].startswith("VLLM::EngineCore") else None)
            if kind:
                found[kind].append(pid)
        if all(len(pids) == 1 for pids in found.values()) and found["api"][0] != not_api:
            return found["guard"][0], found["api"][0], found["core"][0]
        return None

    tree = wait_for(current, 300, 0.5)
    assert tree, run_processes(tag)
    return tree


def _kill_all(tag):
    for pid in run_processes(tag):
        os.kill(pid, signal.SIGKILL)


def _answered(run):
    """SUCCESS records so far: the server answers again (an ERROR record can be written while it restarts)."""
    ledger = run / "out" / "long.txt.log.jsonl"
    if not ledger.exists():
        return 0
    text = ledger.read_text()
    whole = text[:text.rfind("\n") + 1]  # not the record the host is writing now
    return sum(json.loads(line)["status"] == "SUCCESS" for line in whole.splitlines())


def test_kill_9_of_each_process_leaves_nothing_and_a_foreign_port_is_never_used(tmp_path):
    foreign = serve_foreign()
    port = foreign.server_address[1]
    inputs = write_inputs(tmp_path / "in", {"long.txt": LINES})
    run, tag, shared = tmp_path / "run", uuid.uuid4().hex, set()  # shared: the run's own /dev/shm files seen
    args = ["mode=server_per_node", f"input.path={inputs}", f"mode.port={port}", "mode.concurrency=4",
            "mode.health_interval_s=1", "mode.max_restarts=3", "mode.stop_grace_s=5", "sampling.max_tokens=48",
            f"hydra.run.dir={run}"]
    job = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "job.err", "wb"), env={**os.environ, **tagged_env(tag)})
    try:
        _kill_each_in_turn(job, run, tag, port, args, shared)
    except BaseException:
        _kill_all(tag)
        raise
    finally:
        foreign.shutdown()
    assert job.wait(timeout=60) != 0
    # nothing of the run is left, and the resource trackers had their time to unlink what the engines shared
    gone, left = wait_for(lambda: not run_processes(tag), 60), run_processes(tag)
    _kill_all(tag)
    assert gone, left
    assert shared, "the run's engines shared no semaphore: the leak check below would check nothing"
    leaked = wait_for(lambda: not shared & shm_files(), 10) or shared & shm_files()
    assert foreign.seen == [], "the runner talked to the foreign server"
    records = read_jsonl(run / "out" / "long.txt.log.jsonl")
    # a line in flight at two of the engine's deaths is ERROR (a line that kills the engine would else take every
    # server down); three deaths seconds apart can make an innocent one such a line: the rerun answers it
    errors = {r["error"] for r in records if r["status"] != "SUCCESS"}
    assert all("engine died 2 times" in error for error in errors), errors
    assert len({r["line"] for r in records}) == len(records)

    rerun = run_runner(args)  # the killed launch's lock is stale: the same command resumes
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    finished = read_jsonl(run / "out" / "long.txt.jsonl")
    assert [r["line"] for r in finished] == list(range(1, len(LINES) + 1))
    assert all(r["status"] == "SUCCESS" for r in finished)
    assert leaked is True, f"left in /dev/shm: {leaked}"


def _kill_each_in_turn(job, run, tag, port, args, shared):
    guard, api, core = _server_tree(job, tag)
    argv = run_processes(tag)[api]
    given = yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text())  # vllm serve --config FILE
    assert given["port"] != port, "the server was started on the foreign server's port"
    assert "--api-key" not in argv and not any("Bearer" in a for a in argv)  # the key stays out of `ps`
    assert wait_for(lambda: _answered(run), 300)

    second = run_runner(args)  # the same command again, while the first one runs
    assert second.returncode == 2 and f"in use by pid {job.pid}" in second.stderr, second.stderr[-2000:]

    for victim in ("api", "core", "guard"):
        killed = {"api": api, "core": core, "guard": guard}[victim]
        shared |= run_shm_files(tag)
        os.kill(killed, signal.SIGKILL)
        before = _answered(run)
        # the job restarts its server; the killed server's other processes are gone, not left beside it
        new = _server_tree(job, tag, not_api=api)
        assert not {guard, api, core} & set(run_processes(tag)), (victim, run_processes(tag))
        guard, api, core = new
        assert wait_for(lambda: _answered(run) > before, 300), f"no answer after the {victim} was killed"
    assert job.poll() is None
    shared |= run_shm_files(tag)
    os.kill(job.pid, signal.SIGKILL)  # the top-level `python -m runner`: its host worker, then the server go
