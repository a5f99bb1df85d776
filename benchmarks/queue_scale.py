"""The work queue at scale: H hosts (threads) over F input files on a real filesystem, counting every metadata call
the queue makes (create, open, stat, listing, utime, rename, unlink, mkdir), no vLLM.

    python benchmarks/queue_scale.py --sizes 8x512 64x2048 2048x2048 --queue new --out results.json
    python benchmarks/queue_scale.py --sizes 8x512 --queue old            # the queue before (--old-ref)

Each host takes files as server_per_node does (it asks for the next one as soon as it has one) and "answers" each
in job_s x hosts / files seconds (writes its output, calls finished() where the queue has it), except one
straggler: the first file any host takes, held until every other file is finished and each waiting host has
polled --straggler-polls times in that end phase.
Calls are counted where the queue makes them, in phases: start (a host's first take), steady (its later takes),
wait (the calls made after a take began waiting: the polls) and end (anything while only the straggler is left).
Heartbeats run no thread here (stale_after_s is long): a beat touches each claim a host holds, so the claims held
when the end phase starts are reported as the utimes one round of beats costs.
"""

import argparse
import importlib.util
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CALLS = {"open": "open", "stat": "stat", "lstat": "stat", "scandir": "listing", "listdir": "listing",
          "utime": "utime", "rename": "rename", "replace": "rename", "unlink": "unlink", "remove": "unlink",
          "rmdir": "unlink", "mkdir": "mkdir"}


class Counting:
    """Wraps the os calls above for paths under `root`, counting them per (phase, kind) in the calling thread's
    phase (threading.local: the harness's own writes go through io.open and are never counted)."""

    def __init__(self, root: Path):
        self.root = str(root)
        self.counts: Counter = Counter()
        self.local = threading.local()
        self.lock = threading.Lock()
        self.saved = {}

    def _wrap(self, name: str, kind: str):
        real = getattr(os, name)

        def counted(path, *args, **kwargs):
            phase = getattr(self.local, "phase", None)
            if phase and isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(self.root):
                flags = args[0] if args else kwargs.get("flags", 0)
                what = "create" if kind == "open" and flags & os.O_CREAT else kind
                with self.lock:
                    self.counts[(phase, what)] += 1
            return real(path, *args, **kwargs)

        return counted

    def __enter__(self):
        for name, kind in _CALLS.items():
            self.saved[name] = getattr(os, name)
            setattr(os, name, self._wrap(name, kind))
        return self

    def __exit__(self, *exc):
        for name, real in self.saved.items():
            setattr(os, name, real)


class PollCounter(threading.Event):
    """The queue's stop event: each wait() is one poll of a waiting host; calls after it count as waiting."""

    def __init__(self, counting: Counting, polls: Counter, host: int, end: threading.Event):
        super().__init__()
        self.counting, self.polls, self.host, self.end = counting, polls, host, end

    def wait(self, timeout=None):
        phase = "end" if self.end.is_set() else "wait"
        self.polls[(phase, self.host)] += 1
        self.counting.local.phase = phase
        return super().wait(timeout)


def load_queue(kind: str, old_ref: str):
    """runner.work_queue of this tree (new), or of git `old_ref` loaded from a temp copy (old)."""
    if kind == "new":
        from runner import work_queue
        return work_queue
    source = subprocess.run(["git", "show", f"{old_ref}:runner/work_queue.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_work_queue.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_work_queue", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _host(state: dict, host: int) -> None:
    counting, queue = state["counting"], state["queues"][host]
    state["barrier"].wait()  # all hosts start at once, as a job's do
    counting.local.phase = "start"
    taken = queue.take()
    while True:
        input_file = next(taken, None)
        counting.local.phase = "end" if state["end"].is_set() else "steady"
        if input_file is None:
            return
        state["claimed"].append((host, input_file.name))
        with state["lock"]:
            straggler = state["straggler"] is None
            if straggler:
                state["straggler"] = (host, input_file)
        if not straggler:
            _answer(state, queue, input_file, state["answer_s"])


def _answer(state: dict, queue, input_file: Path, seconds: float = 0.0) -> None:
    time.sleep(seconds * random.uniform(0.5, 1.5))
    (state["out"] / f"{input_file.name}.jsonl").write_text("{}\n")  # io.open: not counted
    if hasattr(queue, "finished"):
        queue.finished(input_file)
    with state["lock"]:
        state["answered"] += 1


def _make_queues(module, kind: str, hosts: int, files, work: Path, args, counting, polls, end):
    queues = []
    counting.local.phase = "start"
    for h in range(hosts):
        extra = dict(host=h, hosts=hosts, max_poll_s=args.max_poll_s) if kind == "new" else {}
        queue = module.FileQueue(files, work / "out", work / "claims", attempt="bench",
                                 stale_after_s=args.stale_after_s, poll_s=args.poll_s, **extra)
        queue._stop = PollCounter(counting, polls, h, end)
        queues.append(queue)
    counting.local.phase = None
    return queues


def _end_phase(state: dict, hosts: int, files: int, polls: Counter, args) -> dict:
    """Wait until only the straggler is left, then until each waiting host polled N times; then finish it."""
    while state["answered"] < files - 1 and any(t.is_alive() for t in state["threads"]):
        time.sleep(0.01)
    state["end"].set()
    held = [len(q._held) for q in state["queues"]]
    deadline = time.monotonic() + args.end_timeout_s
    while time.monotonic() < deadline:
        waiting = [h for h, t in enumerate(state["threads"]) if t.is_alive()]
        if all(polls[("end", h)] >= args.straggler_polls for h in waiting):
            break
        time.sleep(0.01)
    if state["straggler"] is not None:
        holder, input_file = state["straggler"]
        _answer(state, state["queues"][holder], input_file)
    return {"utime_per_beat_round": sum(held), "utime_per_beat_max_host": max(held)}


def run_size(module, kind: str, hosts: int, files: int, args) -> dict:
    work = Path(tempfile.mkdtemp(dir=args.work_dir, prefix=f"{kind}-{hosts}x{files}-"))
    (work / "in").mkdir()
    (work / "out").mkdir()
    (work / "claims").mkdir()  # as RunDir.make does
    inputs = [work / "in" / f"{i:06d}.txt" for i in range(files)]
    for path in inputs:
        path.write_text("x\n")
    started = time.monotonic()
    polls, end = Counter(), threading.Event()
    with Counting(work) as counting:
        queues = _make_queues(module, kind, hosts, inputs, work, args, counting, polls, end)
        state = {"counting": counting, "queues": queues, "out": work / "out", "claimed": [], "answered": 0,
                 "straggler": None, "end": end, "lock": threading.Lock(), "barrier": threading.Barrier(hosts),
                 "answer_s": args.job_s * hosts / files}
        state["threads"] = [threading.Thread(target=_host, args=(state, h), daemon=True) for h in range(hosts)]
        for thread in state["threads"]:
            thread.start()
        beats = _end_phase(state, hosts, files, polls, args)
        for thread in state["threads"]:
            thread.join()
    return _report(hosts, files, counting.counts, polls, state, beats, time.monotonic() - started)


def _report(hosts: int, files: int, counts: Counter, polls: Counter, state: dict, beats: dict, seconds: float):
    phases = {p: dict(sorted((k, n) for (q, k), n in counts.items() if q == p)) for p in
              ("start", "steady", "wait", "end")}
    total = {p: sum(v.values()) for p, v in phases.items()}
    end_polls = sum(n for (p, _), n in polls.items() if p == "end")
    wait_polls = sum(n for (p, _), n in polls.items() if p == "wait")
    names = [name for _, name in state["claimed"]]
    return {"hosts": hosts, "files": files, "phases": phases, "totals": total,
            "polls": {"wait": wait_polls, "end": end_polls},
            "per_file": {"start": round(total["start"] / files, 3), "steady": round(total["steady"] / files, 3),
                         "start_and_steady": round((total["start"] + total["steady"]) / files, 3),
                         "all": round(sum(total.values()) / files, 3)},
            "wait_ops_per_host_poll": round(total["wait"] / wait_polls, 3) if wait_polls else None,
            "end_ops_per_host_poll": round(total["end"] / end_polls, 3) if end_polls else None,
            **beats, "every_file_claimed_once": sorted(names) == sorted(set(names)) and len(names) == files,
            "seconds": round(seconds, 1)}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["8x512", "64x2048"], help="HOSTSxFILES ...")
    parser.add_argument("--queue", choices=["new", "old"], default="new")
    # the last commit of the queue that tried every file on every host (O(files x hosts) metadata requests)
    parser.add_argument("--old-ref", default="71be216088ae25b53f4ff3cdb53be90747474343",
                        help="git ref whose runner/work_queue.py is the old queue")
    parser.add_argument("--job-s", type=float, default=4.0,
                        help="seconds of answering per host: a file takes job_s x hosts / files (times 0.5-1.5 at "
                             "random), so the hosts overlap as on a job")
    parser.add_argument("--straggler-polls", type=int, default=5)
    parser.add_argument("--poll-s", type=float, default=0.02)
    parser.add_argument("--max-poll-s", type=float, default=2.0, help="new queue: polls back off up to this "
                        "(2048 threads polling cost CPU time: each poll looks at every file in memory)")
    parser.add_argument("--stale-after-s", type=float, default=86400.0,
                        help="no heartbeat thread runs: long enough that no claim goes stale")
    parser.add_argument("--end-timeout-s", type=float, default=1800.0)
    parser.add_argument("--work-dir", default=None, help="where the files go (default: the system temp folder)")
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    module = load_queue(args.queue, args.old_ref)
    result = {"command": shlex.join([sys.executable, *sys.argv]), "queue": args.queue,
              "old_ref": args.old_ref if args.queue == "old" else None, "python": sys.version.split()[0],
              "sizes": []}
    for size in args.sizes:
        hosts, files = (int(n) for n in size.split("x"))
        result["sizes"].append(run_size(module, args.queue, hosts, files, args))
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")  # size by size: a cut run keeps its rows
        print(json.dumps({k: v for k, v in result["sizes"][-1].items() if k != "phases"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
