"""An engine across nodes for real: launcher=local runs two "nodes" (processes of this machine on 127.0.0.2 and
127.0.0.3), their ranks start a real two-raylet Ray cluster, and a pipeline_parallel_size=2 SmolLM2 engine runs
over it (a stage on each node). The head rank is SIGKILLed mid-run, then the run is rerun to its end."""

import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import pytest

from helpers.cli import run_runner, start_runner
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, tagged_env, wait_for

LINES = [f"Give one word that rhymes with {w}." for w in
         ("cat", "dog", "tree", "sun", "moon", "star", "car", "bee", "rain", "snow", "king", "ship", "fish", "hat",
          "rose", "bell", "cake", "lake", "ring", "door")]


def _args(inputs: Path, run: Path, ray_tmp: str) -> list:
    # PP 2 on two nodes of one CPU slot each; vLLM-CPU needs its compile warm-up for the later stage (the eager
    # torch.compile backend keeps it short); 4 requests in flight: the answers come in waves, so a kill lands
    # mid-run
    return [f"input.path={inputs}", "mode.assign=by_rank", f"hydra.run.dir={run}", "nodes=2",
            "cluster.ranks_per_node=1",
            "+engine.pipeline_parallel_size=2", "+engine.enforce_eager=false",
            "+engine.compilation_config={backend: eager}", f"cluster.ray_tmpdir={ray_tmp}", "mode.max_in_flight=4", "sampling.max_tokens=16"]


def _proc_info(pid: int):
    """(session id, argv, environ) of a live process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[3]), argv, environ


class Watcher:
    """Every process of the run, with its session, while it runs (vLLM's Ray workers rename their title)."""

    def __init__(self, tag: str):
        self.tag, self.seen, self.done = tag, {}, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.done.wait(0.5):
            for pid in run_processes(self.tag):
                info = _proc_info(pid)
                if info:  # the newest: a Ray worker takes its actor's name once it holds one
                    self.seen[pid] = info

    def stop(self):
        self.done.set()
        self.thread.join()

    def raylet_ips(self) -> set:
        return {a.split("=", 1)[1] for _, argv, _ in self.seen.values() if argv[0].endswith("raylet")
                for a in argv if a.startswith("--node_ip_address=")}

    def ray_worker_sessions(self) -> set:
        """The sessions (one per node's guard) that held one of vLLM's Ray workers."""
        return {sid for sid, argv, _ in self.seen.values() if argv[0].startswith("ray::RayWorker")}

    def rank(self, rank: int):
        """The live pid of the run's rank `rank` (a runner.worker process), or None."""
        for pid, (_, argv, environ) in self.seen.items():
            if "runner.worker" in argv and f"RUNNER_RANK={rank}".encode() in environ and Path(f"/proc/{pid}").exists():
                return pid
        return None


@pytest.mark.engine
def test_a_pp2_engine_over_two_ray_nodes_survives_a_killed_head_and_the_rerun_answers_every_line_once(tmp_path, tag):
    inputs = write_inputs(tmp_path / "in", {"0.in": LINES})
    run, ray_tmp = tmp_path / "run", tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    shm_at_start = _stage_buffers()
    watcher = Watcher(tag)
    try:
        launch = start_runner(_args(inputs, run, ray_tmp), tmp_path / "first.err", env=tagged_env(tag))
        ledger = run / "out" / "0.log.jsonl"
        answered = wait_for(lambda: ledger.exists() and len(read_jsonl(ledger)) >= 3 and watcher.rank(0), 400, 0.1)
        assert answered, (tmp_path / "first.err").read_text()[-3000:]
        os.kill(watcher.rank(0), signal.SIGKILL)
        assert launch.wait(timeout=120) != 0
        first = {r["line"] for r in read_jsonl(ledger)}
        assert 3 <= len(first) < len(LINES)  # killed mid-run
        assert watcher.raylet_ips() == {"127.0.0.2", "127.0.0.3"}  # two Ray nodes, one per "node"
        assert len(watcher.ray_worker_sessions()) == 2, sorted({a[0][:60] for _, a, _ in watcher.seen.values()})
        # (the head's guard session and the other node's: a pipeline stage's worker on each node)
        _wait_gone(tag, ray_tmp, shm_at_start)
        proc = run_runner(_args(inputs, run, ray_tmp), env=tagged_env(tag))
        _check_rerun(proc, run, len(first), tag, ray_tmp, shm_at_start)
    finally:
        watcher.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _check_rerun(proc, run: Path, before: int, tag: str, ray_tmp: str, shm_at_start: set) -> None:
    """The rerun answered the rest, and only the rest: every line once, in order; nothing left running."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((run / "stats" / "rank0.json").read_text())
    assert (stats["resumed"], stats["answered"]) == (before, len(LINES) - before)
    records = read_jsonl(run / "out" / "0.out")
    assert [(r["line"], r["prompt"], r["status"]) for r in records] == [
        (n, text, "SUCCESS") for n, text in enumerate(LINES, start=1)]
    assert all(r["output_tokens"] > 0 for r in records)
    assert not (run / "out" / "0.log.jsonl").exists()
    _wait_gone(tag, ray_tmp, shm_at_start)


def _wait_gone(tag: str, ray_tmp: str, shm_at_start: set) -> None:
    """No process of the run, no Ray session folder, no stage buffer of vLLM-CPU's left in /dev/shm."""
    assert wait_for(lambda: not run_processes(tag), 30), run_processes(tag)
    assert os.listdir(ray_tmp) == []
    leaked = _stage_buffers() - shm_at_start
    assert not leaked, leaked


def _stage_buffers() -> set:
    """vLLM-CPU's shared-memory buffers between pipeline stages (<port>-pp:...-cpushm_<rank>)."""
    return {n for n in os.listdir("/dev/shm") if "-pp:" in n and "-cpushm_" in n}


@pytest.mark.engine
def test_a_dead_node_stops_its_engine_keeps_the_answered_lines_and_leaves_nothing(tmp_path, tag):
    inputs = write_inputs(tmp_path / "in", {"0.in": LINES})
    run, ray_tmp = tmp_path / "run", tempfile.mkdtemp(prefix="rt", dir="/tmp")
    shm_at_start, watcher = _stage_buffers(), Watcher(tag)
    ledger = run / "out" / "0.log.jsonl"
    try:
        launch = start_runner(_args(inputs, run, ray_tmp), tmp_path / "err", env=tagged_env(tag))
        assert wait_for(lambda: ledger.exists() and len(read_jsonl(ledger)) >= 2 and watcher.rank(1), 400, 0.1), (
            tmp_path / "err").read_text()[-3000:]
        os.kill(watcher.rank(1), signal.SIGKILL)  # the second node: its raylet and pipeline stage go with it
        before = len(read_jsonl(ledger))
        assert launch.wait(timeout=120) != 0  # the head saw its engine lose a node and stopped
        after = {r["line"] for r in read_jsonl(ledger)}
        assert before <= len(after) < len(LINES) and not (run / "out" / "0.out").exists()
        _wait_gone(tag, ray_tmp, shm_at_start)
    finally:
        watcher.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
