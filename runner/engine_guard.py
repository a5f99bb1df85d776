"""python -m runner.engine_guard RANK_PID CORE_PID:START_TICKS...: kill a per_tile rank's engine core processes
when the rank dies, even by SIGKILL. vLLM's engine core (a process of its own, as on GPU clusters) waits on its
front end's socket for good when the rank is gone, holding the device's memory: the kernel sends this guard
SIGTERM when the rank dies (PR_SET_PDEATHSIG), and it SIGKILLs the cores it was given (each told by its start
time, so a reused pid is left alone); their own workers follow them (vLLM's death pipe)."""

import os
import signal
import sys
from typing import List

from runner import procs


def _kill_cores(cores: List[str]) -> None:
    for core in cores:
        pid, ticks = (int(part) for part in core.split(":"))
        if procs.start_ticks(pid) == ticks:
            os.kill(pid, signal.SIGKILL)
    os._exit(0)


def main(argv: List[str]) -> int:
    rank, cores = int(argv[0]), argv[1:]
    signal.signal(signal.SIGTERM, lambda *_: _kill_cores(cores))
    procs.arm_parent_death(signal.SIGTERM, rank)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
