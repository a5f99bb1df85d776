"""Several `vllm serve` per server_per_node host, for real on the CPU: one per engine of cluster.engines, fed by
the host's client (least outstanding requests), a server killed mid-run (kill -9 of its process group)."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid

import pyarrow.parquet as pq
import pytest
import yaml

from helpers.cli import run_runner, start_runner
from helpers.foreign import serve_foreign
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, run_shm_files, shm_files, tagged_env, wait_for

pytestmark = pytest.mark.engine


def _args(inputs, run, scratch, port, *extra):
    return ["mode=server_per_node", f"input.path={inputs}", f"mode.port={port}", f"mode.scratch_dir={scratch}",
            "mode.health_interval_s=1", f"hydra.run.dir={run}", *extra]


def _guard_of(tag, server: int):
    """The pid of server `server`'s guard (the leader of its process group), found by its config file."""
    for pid, argv in run_processes(tag).items():
        if "runner.server_guard" in argv and any(a.endswith(f"server{server}/vllm-serve.yaml") for a in argv):
            return pid
    return None


def _serves(scratch, server: int) -> bool:
    """Server `server` answers /health on the port its config file names now (the restarted one's, once
    respawned)."""
    for config in scratch.glob(f"runner-*-host0/server{server}/vllm-serve.yaml"):
        try:
            port = yaml.safe_load(config.read_text())["port"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return True
        except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
            return False
    return False


class _Killer(threading.Thread):
    """Once the ledger holds `after` records: SIGKILL server `server`'s process group, then watch, until the run
    ends, whether lines were answered while that server was not serving."""

    def __init__(self, tag, ledger, scratch, server=1, after=4):
        super().__init__(daemon=True)
        self.tag, self.ledger, self.scratch, self.server, self.after = tag, ledger, scratch, server, after
        self.over, self.killed_at, self.answered_while_down, self.shared = threading.Event(), None, 0, set()
        self.cores = []  # each server's CPU cores (its guard's affinity), seen before the kill

    def _records(self) -> int:
        return len(self.ledger.read_text().splitlines()) if self.ledger.exists() else 0

    def run(self):
        while not self.over.is_set() and (self._records() < self.after or _guard_of(self.tag, self.server) is None):
            time.sleep(0.2)
        if self.over.is_set():
            return
        self.shared = run_shm_files(self.tag)
        self.cores = [os.sched_getaffinity(_guard_of(self.tag, i)) for i in range(self.server + 1)]
        os.killpg(_guard_of(self.tag, self.server), signal.SIGKILL)
        self.killed_at = last = self._records()
        while not self.over.wait(0.3):
            now = self._records()
            if now > last and not _serves(self.scratch, self.server):
                self.answered_while_down += now - last
            last = now


def _foreign_beside_a_free_port():
    """(port, foreign): a port free now, and another user's HTTP service on the port after it."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        try:
            return port, serve_foreign(port + 1)
        except OSError:
            continue


def _run_with_killer(tmp_path, lines, *extra, server=1, port=0):
    inputs = write_inputs(tmp_path / "in", {"q.txt": lines})
    run, scratch, tag = tmp_path / "run", tmp_path / "scratch", uuid.uuid4().hex
    killer = _Killer(tag, run / "out" / "q.txt.log.jsonl", scratch, server=server)
    killer.start()
    try:
        proc = run_runner(_args(inputs, run, scratch, port, *extra), env=tagged_env(tag))
    finally:
        killer.over.set()
        killer.join()
    return proc, run, tag, killer


def _answered_once(run, lines) -> dict:
    """Every line has one SUCCESS record in the output, and the host appended one answer per line (a line
    answered twice would count twice); returns the host's stats."""
    records = read_jsonl(run / "out" / "q.txt.jsonl")
    assert [(r["line"], r["prompt"], r["status"]) for r in records] == [
        (n, text, "SUCCESS") for n, text in enumerate(lines, start=1)]
    stats = json.loads((run / "stats" / "host0.json").read_text())
    assert (stats["answered"], stats["errors"]) == (len(lines), 0)
    return stats


def test_two_servers_share_a_host_and_one_killed_mid_run_is_restarted_while_the_other_answers(tmp_path):
    """Server 1 starts looking at mode.port + 1, where another service listens: it takes the next free port."""
    lines = [f"Write a short story about the number {i}." for i in range(1, 41)]
    port, foreign = _foreign_beside_a_free_port()
    try:
        proc, run, tag, killer = _run_with_killer(tmp_path, lines, "cluster.engines=[1,1]", "mode.concurrency=3",
                                                  "sampling.max_tokens=32", "cluster.cores_per_socket=2", port=port)
    finally:
        foreign.shutdown()
        foreign.server_close()
    assert killer.killed_at is not None, "the server was never killed"
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = _answered_once(run, lines)
    assert stats["restarts"] == 1 and len(stats["requests"]) == 2
    assert all(n > 0 for n in stats["requests"]), stats["requests"]  # least outstanding: both were fed
    assert killer.answered_while_down > 0, "no line was answered while the killed server was down"
    ports = [yaml.safe_load((run / "logs" / "host0" / f"server{i}" / "vllm-serve.yaml").read_text())["port"]
             for i in (0, 1)]
    assert ports[0] == port and ports[1] > port + 1 and not foreign.seen  # the foreign service was never asked
    assert killer.cores == [{0}, {1}]  # and on a core of its own (cluster.cores_per_socket=2: this machine's)
    assert wait_for(lambda: not run_processes(tag), 30), f"outlived the run: {run_processes(tag)}"
    assert killer.shared, "the servers share no semaphore: the leak check below would check nothing"
    assert wait_for(lambda: not killer.shared & shm_files(), 10), f"leaked in /dev/shm: {killer.shared & shm_files()}"
    assert not list((tmp_path / "scratch").iterdir())  # the host's scratch was copied to logs/ and removed


def test_a_tp3_server_beside_a_tp1_server_answers_alone_once_the_other_gives_up(tmp_path):
    """cluster.engines=[3,1] on 4 CPU slots: a TP 3 server (vLLM's multiprocessing executor) and a TP 1 server;
    the TP 1 one killed with no restart left: the TP 3 one answers its share, the host ends well."""
    lines = [f"Name an animal that starts with the letter {c}." for c in "ABCDEFGHIJKL"]
    proc, run, tag, killer = _run_with_killer(tmp_path, lines, "cluster.ranks_per_node=4", "cluster.engines=[3,1]",
                                              "mode.max_restarts=0", "mode.concurrency=2", "sampling.max_tokens=16")
    assert killer.killed_at is not None, "the server was never killed"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 engine(s) per node" in proc.stderr  # the layout, printed at launch
    stats = _answered_once(run, lines)
    assert stats["restarts"] == 0 and all(n > 0 for n in stats["requests"]), stats["requests"]
    assert killer.killed_at < len(lines) and killer.answered_while_down > 0  # (the ledger is gone once complete)
    tp3, tp1 = (yaml.safe_load((run / "logs" / "host0" / f"server{i}" / "vllm-serve.yaml").read_text())
                for i in (0, 1))
    assert (tp3["tensor-parallel-size"], tp3["distributed-executor-backend"]) == (3, "mp")
    assert tp1.get("tensor-parallel-size", 1) == 1 and tp1["distributed-executor-backend"] == "uni"
    assert wait_for(lambda: not run_processes(tag), 30), f"outlived the run: {run_processes(tag)}"
    assert wait_for(lambda: not killer.shared & shm_files(), 10), f"leaked in /dev/shm: {killer.shared & shm_files()}"


def _engine_core_of(tag, server: int):
    """The pid of server `server`'s engine core: the member of its guard's session that is neither the guard, the
    API server nor multiprocessing's resource tracker."""
    guard = _guard_of(tag, server)
    for pid, argv in run_processes(tag).items():
        stat = open(f"/proc/{pid}/stat").read()
        command = " ".join(argv)
        if (int(stat[stat.rfind(")") + 2:].split()[3]) == guard and pid != guard and "api_server" not in command
                and "resource_tracker" not in command):
            return pid
    return None


def test_a_hung_engine_core_is_restarted_and_its_lines_answered_by_the_host_once(tmp_path, tag):
    """SIGSTOP of server 1's engine core mid-run: its API process still answers /health, but no token comes; after
    mode.stall_s the host restarts it and its requests are answered (by either server), each line once, long before
    their request timeout (900 s). The records' ids are 20-digit integers (past int64): the Parquet copy holds
    them as text, and the file still finishes."""
    lines = [f"Write a short story about the number {i}." for i in range(1, 25)]
    ids = [10 ** 19 + i for i in range(len(lines))]
    records = [json.dumps({"id": n, "question": q}) for n, q in zip(ids, lines)]
    inputs = write_inputs(tmp_path / "in", {"q.txt": records})
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    ledger, stopped = run / "out" / "q.txt.log.jsonl", {}

    def stop_core():
        while not (ledger.exists() and len(ledger.read_text().splitlines()) >= 4 and _engine_core_of(tag, 1)):
            if job.poll() is not None:
                return
            time.sleep(0.2)
        stopped["pid"], stopped["at"] = _engine_core_of(tag, 1), time.monotonic()
        os.kill(stopped["pid"], signal.SIGSTOP)

    job = start_runner(_args(inputs, run, scratch, 0, "cluster.engines=[1,1]", "mode.concurrency=2",
                             "sampling.max_tokens=32", "mode.stall_s=6", "mode.stop_grace_s=5", "input=jsonl",
                             "input.template='{question}'", "input.id_fields=[id]", "output.parquet=true"),
                       tmp_path / "stderr", env=tagged_env(tag))
    stopper = threading.Thread(target=stop_core, daemon=True)
    stopper.start()
    try:
        job.wait(timeout=400)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stopper.join(timeout=5)
        if stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped["pid"], signal.SIGCONT)  # before the fix: the host waits out the request timeout
        if job.poll() is None:
            job.kill()
            job.wait()
    assert stopped, "the engine core was never stopped"
    assert job.returncode == 0, (tmp_path / "stderr").read_text()[-3000:]
    assert time.monotonic() - stopped["at"] < 200  # not the request timeout's 900 s
    stats = _answered_once(run, lines)
    assert stats["restarts"] == 1
    assert [r["id"] for r in read_jsonl(run / "out" / "q.txt.jsonl")] == ids
    copy = pq.read_table(run / "out" / "q.txt.parquet").to_pylist()
    assert [(r["id"], r["line"], r["response"]) for r in copy] == [
        (str(r["id"]), r["line"], r["response"]) for r in read_jsonl(run / "out" / "q.txt.jsonl")]
    assert wait_for(lambda: not run_processes(tag), 30), f"outlived the run: {run_processes(tag)}"


def test_a_server_whose_engine_died_answers_500_and_its_lines_are_resent_not_recorded_as_errors(tmp_path, tag):
    """kill -9 of server 1's engine core under VLLM_KEEP_ALIVE_ON_ENGINE_DEATH: its API process lives on and
    answers every request with HTTP 500 at once (so it has the fewest outstanding) until its health checks restart
    it. Those lines are the server's failure: resent to a good server, none recorded as ERROR. The retry backoff
    is set short beside the health checks, as the defaults are (1+2+4 s of retries, 3 checks 10 s apart)."""
    lines = [f"Write a short story about the number {i}." for i in range(1, 31)]
    inputs = write_inputs(tmp_path / "in", {"q.txt": lines})
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    ledger, killed = run / "out" / "q.txt.log.jsonl", {}

    def kill_core():
        while not (ledger.exists() and len(ledger.read_text().splitlines()) >= 4 and _engine_core_of(tag, 1)):
            if over.is_set():
                return
            time.sleep(0.2)
        killed["pid"] = _engine_core_of(tag, 1)
        os.kill(killed["pid"], signal.SIGKILL)

    over = threading.Event()
    killer = threading.Thread(target=kill_core, daemon=True)
    killer.start()
    try:
        proc = run_runner(_args(inputs, run, scratch, 0, "cluster.engines=[1,1]", "mode.concurrency=2",
                                "sampling.max_tokens=32", "mode.health_interval_s=2", "mode.retry_backoff_s=0.2"),
                          env={**tagged_env(tag), "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "1"})
    finally:
        over.set()
        killer.join()
    assert killed, "the engine core was never killed"
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = _answered_once(run, lines)  # every line SUCCESS: no ERROR record for the dead engine's 500s
    assert stats["restarts"] == 1
    assert wait_for(lambda: not run_processes(tag), 30), f"outlived the run: {run_processes(tag)}"
