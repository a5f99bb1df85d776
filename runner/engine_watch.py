"""The watch over a rank's offline engine core (a process of its own): vLLM's step blocks for good when the
core is killed (its output thread ends without a word) or stopped (SIGSTOP, a stuck device), so a thread of the
rank looks at it every second. A core that died, or that held requests without a step returning for stall_s,
is killed (a stopped one too: none is left behind) and the blocked step is made to raise EngineDeadError, which
the rank's loop (runner/rank_engine.py) turns into a restart."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import List, Optional

from runner import procs

log = logging.getLogger(__name__)

_EVERY_S = 1.0


def core_processes(llm) -> List:
    """The engine core processes of an LLM (multiprocessing.Process), [] when vLLM runs the core in-process."""
    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    manager = getattr(getattr(client, "resources", None), "engine_manager", None)
    return list(getattr(manager, "processes", None) or [])


class EngineWatch:
    """Started around the step loop, told when each step starts and returns."""

    def __init__(self, llm, stall_s: float):
        self.llm, self.stall_s, self.cores = llm, stall_s, core_processes(llm)
        self.why: Optional[str] = None  # "died (...)" or "hung (...)": set once the watch ended the core
        self._busy, self._last, self._stop = False, time.monotonic(), threading.Event()
        self._thread = threading.Thread(target=self._watch, name="runner-engine-watch", daemon=True)

    def __enter__(self) -> "EngineWatch":
        if self.cores:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def stepping(self, now: bool) -> None:
        """True right before a step, False once it returned: only a step itself counts toward stall_s (the rank's
        own work between steps, a slow append to a shared filesystem, never does)."""
        self._last, self._busy = time.monotonic(), now

    def _watch(self) -> None:
        while not self._stop.wait(_EVERY_S):
            if not all(core.is_alive() for core in self.cores):
                return self._end("died", f"exit code {[core.exitcode for core in self.cores]}")
            if self.stall_s and self._busy and time.monotonic() - self._last >= self.stall_s:
                return self._end("hung", f"no engine step returned for {self.stall_s:g} s, mode.stall_s")

    def _end(self, why: str, detail: str) -> None:
        log.error("the engine core (pid %s) %s: %s; it is killed and the engine restarted",
                  [core.pid for core in self.cores], why, detail)
        self.why = f"{why} ({detail})"
        for core in self.cores:
            if core.is_alive():
                os.kill(core.pid, signal.SIGKILL)  # a stopped process dies of SIGKILL too
            core.join(timeout=30)
        self._unblock()

    def _unblock(self) -> None:
        """Make the step blocked on the core's outputs raise (vLLM's sync client reads them from a queue)."""
        from vllm.v1.engine.exceptions import EngineDeadError

        outputs = getattr(getattr(self.llm.llm_engine, "engine_core", None), "outputs_queue", None)
        if outputs is not None:
            outputs.put_nowait(EngineDeadError())
        else:  # another vLLM: end the rank (its ledger holds every answer so far; a rerun goes on)
            os.kill(os.getpid(), signal.SIGTERM)


def guard(llm) -> Optional[subprocess.Popen]:
    """A guard that kills the engine's core processes when this rank dies (runner/engine_guard.py); None for an
    engine in the rank's process. Started from the main thread: the kernel signals the guard when the thread
    that started it ends."""
    cores = [f"{core.pid}:{procs.start_ticks(core.pid)}" for core in core_processes(llm)]
    if not cores:
        return None
    return subprocess.Popen([sys.executable, "-m", "runner.engine_guard", str(os.getpid()), *cores])


def shutdown(llm, guarding: Optional[subprocess.Popen]) -> None:
    """Free what is left of an ended engine (its core is dead) before another is built."""
    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    try:
        client.shutdown()
    except Exception as e:  # the core is gone already: what is left to free is the front end's
        log.debug("shutting down an ended engine: %s", e)
    if guarding is not None:  # its cores are dead: it kills none (it checks their start times)
        guarding.terminate()
        guarding.wait()
