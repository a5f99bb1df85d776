"""python -m runner.server_guard PARENT_PID ARGV...: run `vllm serve` (ARGV) so it cannot outlive its host.

The guard leads the server's process group (the host starts it in a new session). The kernel sends the guard
SIGTERM when its parent, the host worker, dies, even by SIGKILL (PR_SET_PDEATHSIG, Linux); the guard then
SIGKILLs its whole group, the server's engine-core processes included. SIGINT, the clean stop that the host
sends to the group, is left to the server; the guard exits with the server's status.
"""

import ctypes
import os
import signal
import subprocess
import sys
from typing import List

_PR_SET_PDEATHSIG = 1


def _kill_group(*_) -> None:
    os.killpg(0, signal.SIGKILL)


def main(argv: List[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    signal.signal(signal.SIGTERM, _kill_group)
    signal.signal(signal.SIGINT, lambda *_: None)  # caught, not ignored: the server's own SIGINT stays default
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only; elsewhere no guard
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the host died before the guard was set
        _kill_group()
    return subprocess.Popen(command).wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
