"""The shared file queue on a real filesystem: two hosts' queues over one claims folder."""

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

from helpers.cli import ROOT

from runner.run_dir import RunDir
from runner.work_queue import FileQueue, prune_attempts


def _files(tmp_path, names):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        (folder / name).write_text("x\n")
    return [folder / name for name in names]


def _finish(out, input_file):
    RunDir(out.parent).file_item(input_file).output.write_text("{}\n")


def test_two_hosts_never_take_the_same_file(tmp_path):
    files, out = _files(tmp_path, ["a", "b", "c"]), tmp_path / "out"
    out.mkdir()
    host0 = FileQueue(files, out, tmp_path / "claims", attempt="job1")
    host1 = FileQueue(files, out, tmp_path / "claims", attempt="job1")
    taken0, taken1 = host0.take(), host1.take()
    got = [next(taken0), next(taken1), next(taken0)]
    assert sorted(f.name for f in got) == ["a", "b", "c"]
    assert next(taken1, None) is None


def test_a_dead_hosts_file_is_taken_over_once_its_claim_is_stale(tmp_path):
    files, out = _files(tmp_path, ["a", "b"]), tmp_path / "out"
    out.mkdir()
    dead = FileQueue(files, out, tmp_path / "claims", attempt="job1", stale_after_s=60, poll_s=0.1)
    assert next(dead.take()).name == "a"  # ... and the host dies: its claim is never touched again
    claim = tmp_path / "claims" / "job1" / "a"
    os.utime(claim, (time.time() - 120, time.time() - 120))
    alive = FileQueue(files, out, tmp_path / "claims", attempt="job1", stale_after_s=60, poll_s=0.1)
    taken = alive.take()
    first = next(taken)
    assert first.name == "b"
    _finish(out, first)
    second = next(taken)
    assert second.name == "a"
    assert (tmp_path / "claims" / "job1" / "a.takeover1").exists()
    _finish(out, second)
    assert next(taken, None) is None
    # a third host finds every file finished: nothing to take, no further takeover
    late = FileQueue(files, out, tmp_path / "claims", attempt="job1", stale_after_s=60, poll_s=0.1)
    assert next(late.take(), None) is None
    assert not (tmp_path / "claims" / "job1" / "a.takeover2").exists()


def test_a_live_hosts_claim_is_kept_alive_and_never_taken_over(tmp_path):
    files, out = _files(tmp_path, ["a"]), tmp_path / "out"
    out.mkdir()
    busy = FileQueue(files, out, tmp_path / "claims", attempt="job1", stale_after_s=0.5, poll_s=0.1)
    idle = FileQueue(files, out, tmp_path / "claims", attempt="job1", stale_after_s=0.5, poll_s=0.1)
    taken_by_idle = []
    with busy.heartbeats():
        mine = next(busy.take())
        waiter = threading.Thread(target=lambda: taken_by_idle.extend(idle.take()))
        waiter.start()
        time.sleep(2.0)  # four times the stale age: only the heartbeats keep the claim
        _finish(out, mine)
        waiter.join(timeout=10)
    assert not waiter.is_alive(), "the idle host should stop once every file is finished"
    assert taken_by_idle == []


def test_a_waiting_take_ends_when_the_host_stops(tmp_path):
    files, out = _files(tmp_path, ["a"]), tmp_path / "out"
    out.mkdir()
    other = FileQueue(files, out, tmp_path / "claims", attempt="job1", stale_after_s=600, poll_s=30)
    assert next(other.take()).name == "a"  # another host is answering "a": this one waits for it
    waiting = FileQueue(files, out, tmp_path / "claims", attempt="job1", stale_after_s=600, poll_s=30)
    got = []
    thread = threading.Thread(target=lambda: got.append(next(waiting.take(), None)))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()
    started = time.monotonic()
    waiting.stop_waiting()
    thread.join(timeout=5)
    assert not thread.is_alive() and got == [None]
    assert time.monotonic() - started < 5  # not the 30 s poll interval


# metadata calls at scale: each counted where the queue makes it (benchmarks/queue_scale.py counts the same way)

sys.path.insert(0, str(ROOT / "benchmarks"))
import queue_scale  # noqa: E402


def _counted(tmp_path, files, hosts=1, **kwargs):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (tmp_path / "claims").mkdir(exist_ok=True)  # as RunDir.make does
    queues = [FileQueue(files, out, tmp_path / "claims", attempt="job1", host=h, hosts=hosts, **kwargs)
              for h in range(hosts)]
    return out, queues


def test_one_host_claims_each_file_with_one_create_and_no_stat(tmp_path):
    files = _files(tmp_path, [f"{i:03d}" for i in range(50)])
    out, (queue,) = _counted(tmp_path, files)
    for done in files[:20]:  # finished by an earlier attempt: known from one listing, never claimed
        _finish(out, done)
    with queue_scale.Counting(tmp_path) as counting:
        counting.local.phase = "job"
        got = list(queue.take())
    assert got == files[20:]
    calls = {kind: n for (_, kind), n in counting.counts.items()}
    # 30 claims (+1 create that found no attempt folder yet, made by one mkdir), out/ and claims/ listed once
    assert calls == {"create": 31, "mkdir": 1, "listing": 2}


def test_a_waiting_host_lists_out_once_per_poll_and_stats_nothing(tmp_path):
    files = _files(tmp_path, ["a", "b"])
    out, (busy, idle) = _counted(tmp_path, files, hosts=2, stale_after_s=3600, poll_s=0.01, max_poll_s=0.02)
    mine = next(busy.take())
    with queue_scale.Counting(tmp_path) as counting:
        idle._stop = queue_scale.PollCounter(counting, Counter(), 1, threading.Event())
        counting.local.phase = "take"
        got = next(idle.take())  # its own file, "b"
        waiter = threading.Thread(target=lambda: (setattr(counting.local, "phase", "take"),
                                                  idle.finished(got), list(idle.take())))
        waiter.start()
        time.sleep(0.5)
        _finish(out, mine)
        waiter.join(timeout=10)
    assert not waiter.is_alive() and got.name == "b"
    polls = sum(idle._stop.polls.values())
    waited = {kind: n for (phase, kind), n in counting.counts.items() if phase == "wait"}
    assert polls >= 10 and set(waited) == {"listing"} and polls - 1 <= waited["listing"] <= polls


def test_the_benchmark_counts_both_queues(tmp_path):
    out = tmp_path / "result.json"
    for kind in ("old", "new"):
        assert queue_scale.main(["--sizes", "4x16", "--queue", kind, "--poll-s", "0.01", "--max-poll-s", "0.02",
                                 "--straggler-polls", "3", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
        row = json.loads(out.read_text())["sizes"][0]
        assert row["every_file_claimed_once"] and row["polls"]["end"] >= 3
        if kind == "new":
            assert row["end_ops_per_host_poll"] == 1.0 and row["utime_per_beat_max_host"] <= 1
        else:  # every poll stats every file
            assert row["end_ops_per_host_poll"] > 16


# several real processes on one folder

_HOST = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from runner.run_dir import RunDir
from runner.work_queue import FileQueue
tmp, host, hosts, hold = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
files = sorted((tmp / "in").iterdir())
queue = FileQueue(files, tmp / "out", tmp / "claims", attempt="job1", stale_after_s=1.0, poll_s=0.05,
                  host=host, hosts=hosts, max_poll_s=0.2)
with queue.heartbeats(), open(tmp / f"taken{{host}}", "a") as log:
    for f in queue.take():
        print(f.name, file=log, flush=True)
        if f.name == hold:
            time.sleep(3600)  # holds its claim, touched by the heartbeats, until it is killed
        time.sleep(0.01)
        RunDir(tmp).file_item(f).output.write_text("{{}}\\n")
        queue.finished(f)
"""


def _hosts(tmp_path, count, hold="-"):
    """`count` host processes over tmp_path/in; host 0 holds the file `hold` until killed: it starts alone and the
    others only once it has taken that file (else a host that started sooner could take it first)."""
    script = _HOST.format(root=str(ROOT))

    def start(h):
        return subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(h), str(count), hold if h == 0 else "-"])

    procs = [start(0)]
    if hold != "-":
        deadline = time.time() + 30
        while hold not in _taken(tmp_path, 1) and time.time() < deadline and procs[0].poll() is None:
            time.sleep(0.05)
        if hold not in _taken(tmp_path, 1):
            _stop(procs)
            raise AssertionError("host 0 never took the file it is to hold")
    return procs + [start(h) for h in range(1, count)]


def _taken(tmp_path, count):
    return [name for h in range(count) if (tmp_path / f"taken{h}").exists()
            for name in (tmp_path / f"taken{h}").read_text().split()]


def _stop(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_concurrent_processes_take_every_file_exactly_once(tmp_path):
    names = [f"{i:03d}" for i in range(60)]
    _files(tmp_path, names)
    (tmp_path / "out").mkdir()
    procs = _hosts(tmp_path, 4)
    try:
        assert [proc.wait(timeout=60) for proc in procs] == [0, 0, 0, 0]
    finally:
        _stop(procs)
    assert sorted(_taken(tmp_path, 4)) == names
    assert all((tmp_path / "out" / f"{n}.jsonl").exists() for n in names)
    assert sorted(p.name for p in (tmp_path / "claims" / "job1").iterdir()) == names  # no takeover among live hosts


def test_a_killed_process_file_is_taken_over_by_exactly_one_other(tmp_path):
    names = [f"{i:03d}" for i in range(12)]
    _files(tmp_path, names)
    (tmp_path / "out").mkdir()
    procs = _hosts(tmp_path, 3, hold="000")  # host 0 takes "000" and holds it
    try:
        time.sleep(1.5)  # longer than stale_after_s: only the heartbeats keep host 0's claim
        assert not (tmp_path / "claims" / "job1" / "000.takeover1").exists()
        procs[0].kill()
        assert [proc.wait(timeout=60) for proc in procs[1:]] == [0, 0]
    finally:
        _stop(procs)
    taken = _taken(tmp_path, 3)
    assert sorted(taken) == sorted(names + ["000"])  # "000" twice: by the dead host and by one taker
    claims = sorted(p.name for p in (tmp_path / "claims" / "job1").iterdir())
    assert claims == sorted(names + ["000.takeover1"])
    assert (tmp_path / "out" / "000.jsonl").exists()


def test_earlier_attempts_claims_are_pruned_once_no_host_touches_them(tmp_path):
    root = tmp_path / "claims"
    for attempt in ("old", "live", "now"):
        (root / attempt).mkdir(parents=True)
        (root / attempt / "a").write_text("x\n")
    long_ago = time.time() - 3600
    os.utime(root / "old" / "a", (long_ago, long_ago))
    os.utime(root / "old", (long_ago, long_ago))
    os.utime(root / "now", (long_ago, long_ago))  # this attempt's own folder is kept, however old
    assert prune_attempts(root, "now", stale_after_s=600) == ["old"]
    assert sorted(p.name for p in root.iterdir()) == ["live", "now"]
    assert prune_attempts(root, "now", stale_after_s=0) == []  # without takeover nothing is judged dead


def test_a_few_waiting_hosts_watch_each_claim_a_different_few_each_window(tmp_path):
    files = _files(tmp_path, [f"{i:03d}" for i in range(10)])
    queues = [FileQueue(files, tmp_path / "out", tmp_path / "claims", stale_after_s=600, host=h, hosts=64)
              for h in range(64)]
    for name in ("000", "007"):
        seen = set()
        for window in range(30):
            now = 600.0 * window + 1.0
            watchers = {q.host for q in queues if q.watches(name, now)}
            assert len(watchers) == 3
            seen |= watchers
        assert len(seen) > 60  # over the windows nearly every host takes a turn
    lone = FileQueue(files, tmp_path / "out", tmp_path / "claims", stale_after_s=600)
    assert all(lone.watches(f.name, 1.0) for f in files)  # fewer hosts than watchers: each watches all


_TAKE_ALL = """
import sys
from pathlib import Path
from runner.work_queue import FileQueue
files = sorted(Path(sys.argv[1]).iterdir())
queue = FileQueue(files, Path(sys.argv[2]), Path(sys.argv[3]), stale_after_s=0)
print(" ".join(f.name for f in queue.take()))
"""


def test_a_requeued_slurm_job_keeps_its_job_id_but_claims_afresh(tmp_path):
    """A Slurm job requeued after a node failure or preemption (scontrol requeue, --requeue) starts again under the
    same SLURM_JOB_ID: the claims its first start left (each host's process dead) must not keep this start from
    the files. Two host processes for real, one after the other, with the queue's own attempt id."""
    files = _files(tmp_path, ["a", "b"])
    (tmp_path / "out").mkdir()

    def host(**env):
        return subprocess.run([sys.executable, "-c", _TAKE_ALL, str(tmp_path / "in"), str(tmp_path / "out"),
                               str(tmp_path / "claims")], cwd=ROOT, capture_output=True, text=True, check=True,
                              env={**{k: v for k, v in os.environ.items() if k not in ("RUNNER_ATTEMPT",
                                                                                        "PBS_JOBID")}, **env})

    assert host(SLURM_JOB_ID="77").stdout.split() == ["a", "b"]  # the first start, killed before it finished
    requeued = host(SLURM_JOB_ID="77", SLURM_RESTART_COUNT="1").stdout.split()
    assert requeued == ["a", "b"], f"the requeued job was handed {requeued}: its first start's claims hid the rest"
    assert files[0].exists() and sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["77", "77-r1"]
