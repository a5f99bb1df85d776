"""The shared file queue on a real filesystem: two hosts' queues over one claims folder."""

import os
import threading
import time

from runner.work_queue import FileQueue, output_path


def _files(tmp_path, names):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        (folder / name).write_text("x\n")
    return [folder / name for name in names]


def _finish(out, input_file):
    output_path(out, input_file).write_text("{}\n")


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
