"""On the GPU machine, beside a benchmark call: every second, each busy thread of the processes that drive or
run an engine (the raw leg, a per_tile rank, vllm serve, their EngineCore), with the vCPU it last ran on and the
CPU ticks it used since the last sample. A leg whose GPU waits longer than its neighbour's can then be told
apart: its engine core's busy thread sharing a vCPU with another busy thread, moving between vCPUs, or getting
fewer ticks per second on a vCPU of its own (a neighbour outside the guest).

    python3 benchmarks/device/threads.py OUT.txt &     (round.sh starts and stops it)
Lines: unix_time pid tid ticks_since_last vcpu comm (threads that used no tick are left out).
"""

import sys
import time
from pathlib import Path

_KINDS = (b"bench_vs_raw.py\x00raw", b"runner.worker", b"vllm.entrypoints", b"vllm serve", b"VLLM::EngineCore")


def _watched() -> list:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if any(kind in cmdline for kind in _KINDS) or (proc / "comm").read_bytes().startswith(b"EngineCore"):
                pids.append(proc.name)
    return pids


def _threads(pid: str):
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        # fields after the comm: utime and stime are the 12th and 13th, the last vCPU the 37th
        yield task.name, comm, int(rest[11]) + int(rest[12]), rest[36]


def main() -> None:
    last = {}
    with open(sys.argv[1], "w", buffering=1) as out:
        out.write("# unix_time pid tid ticks_since_last vcpu comm\n")
        while True:
            now = int(time.time())
            for pid in _watched():
                try:
                    for tid, comm, ticks, vcpu in _threads(pid):
                        used, last[tid] = ticks - last.get(tid, ticks), ticks
                        if used > 0:
                            out.write(f"{now} {pid} {tid} {used} {vcpu} {comm.replace(' ', '_')}\n")
                except OSError:
                    continue
            time.sleep(1)


if __name__ == "__main__":
    main()
