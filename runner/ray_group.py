"""mode=per_tile with an engine across nodes: each node of an engine's group runs one rank, and together they form
the engine's own Ray cluster; the group's first node answers the engine's input, g.in for engine g.

- head (the group's first node): starts its Ray node (--head, on a free port), publishes the address in
  ray/<attempt>/engine<g>.address, waits for every other node to join, then answers g.in like any per_tile rank,
  with vLLM's Ray executor placing the engine's workers over the group's nodes. When it ends (done, failed,
  cancelled) it empties the address file and stops its node, which takes the cluster down.
- every other node: reads the address (one open per poll, backed off to 2 s), joins, and holds its raylet until
  the head's cluster is gone, then stops its own node. It succeeds when the engine's output is complete.

A node that dies takes its Ray processes with it (runner.ray_node); vLLM's engine on the head then fails, the
lines answered so far stay in the ledger and the rest are left for the rerun, as after any failed rank.
"""

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig

from runner import atomic, ray_driver
from runner.errors import JobFailedError
from runner.layout import Engine, Layout, accelerator_of
from runner.ray_node import RayNode, listening
from runner.run_dir import RunDir
from runner.schema import Accelerator
from runner.stats import WorkerStats
from runner.topology import Placement, node_ip
from runner.work_queue import attempt_id

log = logging.getLogger(__name__)

# seconds between a joined node's checks that its head's cluster still listens
WATCH_S = 2.0
_MISSES = 3
_POLL_MAX_S = 2.0


def engine_index(placement: Placement, engine: Engine) -> int:
    """The engine (its group of nodes) this rank's node belongs to."""
    return placement.node // engine.nodes


def run_node(cfg: DictConfig, run: RunDir, placement: Placement, stats: WorkerStats, laid_out: Layout,
             output: Path, answer: Callable[[], WorkerStats]) -> WorkerStats:
    """This node's part of its engine: the head answers (`answer`), the others hold their Ray node for it."""
    engine = laid_out.engines[0]
    group, index = engine_index(placement, engine), placement.node % engine.nodes
    attempt = attempt_id()
    node = RayNode(node_ip(), _temp_dir(cfg, run, attempt, placement.rank), run.ray_log(placement.rank),
                   laid_out.devices_per_node, list(cfg.cluster.get("ray_start_args") or []))
    address_file = run.ray_address_file(attempt, group)
    try:
        if index == 0:
            return _head(cfg, node, address_file, engine.nodes, answer)
        _hold(cfg, node, address_file, group, output)
        return stats
    finally:
        node.stop()


def _temp_dir(cfg: DictConfig, run: RunDir, attempt: str, rank: int) -> Path:
    """A short node-local folder of this run, attempt and rank (Ray's socket paths under it must stay under
    the 107 characters a Unix socket path may have)."""
    digest = hashlib.blake2b(f"{run.root}\0{attempt}".encode(), digest_size=4).hexdigest()
    return Path(cfg.cluster.get("ray_tmpdir") or "/tmp") / f"rr-{digest}-{rank}"


def _head(cfg: DictConfig, node: RayNode, address_file: Path, nodes: int,
          answer: Callable[[], WorkerStats]) -> WorkerStats:
    timeout = cfg.mode.ray_start_timeout_s
    address_file.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    try:
        address = node.start_head(timeout, token)
        _publish(address_file, f"{address} {token}")
        ray_driver.connect(address, token, nodes, accelerator_of(cfg.cluster) == Accelerator.cpu, node, timeout)
        return answer()
    finally:
        node.note_shared()  # before the engine's shutdown stops its workers here
        ray_driver.disconnect()
        _publish(address_file, "")  # the engine has ended: a node that has not joined yet stops waiting


def _publish(address_file: Path, text: str) -> None:
    """The address and token, readable by this user only (the token lets whoever holds it run code on the
    cluster)."""
    with atomic.replacing(address_file) as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _hold(cfg: DictConfig, node: RayNode, address_file: Path, group: int, output: Path) -> None:
    published = _await_address(address_file, cfg.mode.ray_start_timeout_s)
    if published:
        address, token = published.split()
        node.join(address, token)
        ip, port = address.rsplit(":", 1)
        misses = 0
        while misses < _MISSES:  # a connection refused (or timed out) this many times in a row: the head is gone
            misses = 0 if listening(ip, int(port)) else misses + 1
            node.check_alive()
            node.note_shared()
            time.sleep(WATCH_S)
        log.info("the Ray cluster of engine %d at %s has ended", group, address)
    if not output.exists():
        raise JobFailedError(f"engine {group} ended with lines of its input left (its head rank, the first of its "
                             "nodes, says why in its log); rerun the same command to resume")


def _await_address(address_file: Path, timeout_s: float) -> Optional[str]:
    """The head's "address token" once it is published; None when the head ended before this node joined."""
    deadline, pause = time.monotonic() + timeout_s, 0.1
    while True:
        try:
            return address_file.read_text().strip() or None
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise JobFailedError(f"the head of this engine published no Ray address ({address_file}) within "
                                 f"{timeout_s:.0f} s (mode.ray_start_timeout_s): its rank's log says why")
        pause = min(pause * 2, _POLL_MAX_S)
        time.sleep(pause)
