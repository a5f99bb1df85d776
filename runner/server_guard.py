"""python -m runner.server_guard PARENT_PID [--remove DIR] ARGV...: run `vllm serve` (ARGV) so that nothing of it
outlives its host (also a Ray node, runner/ray_node.py: its node-local session folder DIR is removed with it).

The host starts the guard as the leader of a new session, which the server and its engine core join. Whatever
dies, the rest of that session goes too (runner.procs.kill_session):
- the server (the API process) exits or is killed: its engine core, re-parented to the guard (a subreaper),
  is killed with the rest of the session before the guard exits with the server's status;
- the host worker dies, even by SIGKILL: the kernel sends the guard SIGTERM (PR_SET_PDEATHSIG), and the guard
  kills the session;
- the guard itself is SIGKILLed: the server gets SIGKILL from the kernel (its own parent-death signal) and the
  host, seeing the guard gone, kills what is left of the session (VllmServer.stop).
SIGINT, the clean stop that the host sends to the session's process group, is left to the server.
"""

import os
import shutil
import signal
import subprocess
import sys
from typing import List

from runner import procs


_ending = False
# a folder of the session's processes, removed once they are gone (--remove)
_remove = None


def _end(code: int) -> None:
    """Kill the session and exit, once. The parent-death SIGTERM can come more than once (the kernel sends it each
    time this process is handed to another thread of its dying parent), and a second one re-entering here would
    exit before the first had unlinked the session's shared memory."""
    global _ending
    if _ending:
        return
    _ending = True
    procs.kill_session(os.getsid(0))
    if _remove:
        shutil.rmtree(_remove, ignore_errors=True)
    os._exit(code)


def main(argv: List[str]) -> int:
    global _remove
    parent, command = int(argv[0]), argv[1:]
    if command[:1] == ["--remove"]:
        _remove, command = command[1], command[2:]
    procs.become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: _end(143))
    signal.signal(signal.SIGINT, lambda *_: None)  # caught, not ignored: the server's own SIGINT stays default
    procs.arm_parent_death(signal.SIGTERM, parent)  # SIGTERM at once if the host died before this line
    server = subprocess.Popen(command, preexec_fn=procs.die_with_parent(signal.SIGKILL))
    _end(server.wait())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
