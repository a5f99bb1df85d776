"""The `vllm serve` processes of one server_per_node host: one per engine of the node's layout (runner/layout.py),
each with its own port, device mask, engine arguments, log folder, supervisor and (where the cluster names its
cores) block of CPU cores.

On a GPU cluster the layout decides (Aurora, TP 2: 6 servers on tiles 0,1 ... 10,11). On CPU the slots
(cluster.ranks_per_node) count per_tile's ranks: a host runs one server, over all its cores, unless
cluster.engines lists several ([1,1]: two servers of one slot each).
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List

from omegaconf import DictConfig

from runner import cpu_bind, engine, layout
from runner.errors import ConfigError, JobFailedError
from launchers.base import launcher_of
from runner.server import PORT_TRIES, VllmServer
from runner.topology import Placement

log = logging.getLogger(__name__)

# a server's log in its scratch folder; its `vllm serve --config` file sits beside it (.yaml)
SERVER_LOG = "vllm-serve.log"


def host_layout(cfg: DictConfig) -> layout.Layout:
    """The engines of each host: the layout's, or on CPU without cluster.engines its first engine alone."""
    laid_out = layout.layout_of(cfg)
    if laid_out.nodes_per_engine > 1:
        raise ConfigError(f"an engine of {laid_out.nodes_per_engine} nodes (on Ray) runs in mode=per_tile only: "
                          f"server_per_node serves engines of one node (at most {laid_out.devices_per_node} "
                          f"{laid_out.unit} each); use mode=per_tile, or a smaller tensor_parallel_size x "
                          "pipeline_parallel_size")
    if laid_out.unit == layout.CPU_SLOTS and not cfg.cluster.get("engines"):
        first = laid_out.engines[0]
        return layout.Layout((first,), len(first.devices), laid_out.unit)
    return laid_out


def server_folder(scratch: Path, index: int, servers: int) -> Path:
    """Server `index`'s folder in the host's scratch (copied to logs/host<rank>/): the scratch itself when the
    host has one server (as before layouts), server<index>/ when it has several."""
    return scratch if servers == 1 else scratch / f"server{index}"


def first_port(cfg: DictConfig, placement: Placement, index: int, servers: int) -> int:
    """Where server `index` starts looking for a free port: mode.port + index (+ the host's slots before it when
    every host is a process of one machine); 0: any free port."""
    port = cfg.mode.port
    if not port:
        return 0
    hosts_before = placement.rank if launcher_of(cfg).hosts_share_one_machine else 0
    return port + hosts_before * servers + index


def host_servers(cfg: DictConfig, placement: Placement, model_path: str, scratch: Path) -> List[VllmServer]:
    engines = host_layout(cfg).engines
    blocks = cpu_bind.node_blocks(cfg, len(engines)) or [None] * len(engines)
    servers = []
    for i, (eng, block) in enumerate(zip(engines, blocks)):
        folder = server_folder(scratch, i, len(engines))
        folder.mkdir(parents=True, exist_ok=True)
        env = {**{k: str(v) for k, v in cfg.cluster.env.items()}, **layout.engine_env(cfg, eng)}
        args = engine.engine_args(layout.with_engine_overrides(cfg, eng))
        servers.append(VllmServer(model_path, cfg.model.name, first_port(cfg, placement, i, len(engines)), args,
                                  list(cfg.mode.serve_args), folder / SERVER_LOG, env,
                                  set(range(block[0], block[1] + 1)) if block else None))
    return servers


def start_all(servers: List[VllmServer], timeout_s: float) -> float:
    """Start every server at once (spawned from this, the main thread, which the parent-death signal follows) and
    wait until each answers as this run's; a server that lost its port to another process is started again on
    the next free one. Returns the seconds it took; raises when one cannot start (the caller stops them all)."""
    started, waiting = time.monotonic(), list(servers)
    for _ in range(PORT_TRIES):
        for server in waiting:
            server.spawn()
        with ThreadPoolExecutor(len(waiting)) as pool:
            ready = list(pool.map(lambda s: s.wait_ready(timeout_s), waiting))
        waiting = [server for server, ok in zip(waiting, ready) if not ok]
        if not waiting:
            return time.monotonic() - started
    raise JobFailedError(f"vllm serve found each of {PORT_TRIES} free ports taken before it could bind; see "
                         f"{waiting[0].log_path}")


def stop_all(servers: List[VllmServer], grace_s: float) -> None:
    """Stop the servers together (each gets grace_s after its SIGINT, not one after the other)."""
    if servers:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.stop(grace_s), servers))
