"""CPU binding of the processes of one node: each gets its own block of neighbouring cores, the blocks spread
evenly over the node's sockets, the first cores of each socket left to the OS.

Aurora (2 sockets x 52 cores, cores 0 and 52 for the OS), 12 ranks: 1-8, 9-16, ..., 41-48 on the first socket,
53-60, ..., 93-100 on the second: what ALCF's examples pass as `mpiexec --cpu-bind list:1-8:9-16:...`. Used for
the PBS mpiexec line and Slurm's srun (ranks per node) and for the servers of a server_per_node host.
"""

from typing import List, Optional, Tuple

from omegaconf import DictConfig

from runner.errors import ConfigError


def core_blocks(processes: int, sockets: int, cores_per_socket: int, reserved: int) -> List[Tuple[int, int]]:
    """(first, last) core of each process: processes are filled socket by socket, the same number of cores
    each."""
    per_socket = -(-processes // sockets)
    width = (cores_per_socket - reserved) // per_socket
    if width < 1:
        raise ConfigError(f"{processes} processes per node do not get a core each on {sockets} socket(s) of "
                          f"{cores_per_socket} cores ({reserved} per socket left to the OS): lower the processes "
                          "per node or set cluster.cores_per_socket=0 (no binding)")
    blocks = []
    for p in range(processes):
        first = (p // per_socket) * cores_per_socket + reserved + (p % per_socket) * width
        blocks.append((first, first + width - 1))
    return blocks


def node_blocks(cfg: DictConfig, processes: int) -> Optional[List[Tuple[int, int]]]:
    """The blocks of `processes` processes on one of the job's nodes; None when the cluster does not say its
    cores (cluster.cores_per_socket 0) or there is one process (it keeps the whole node: a server_per_node host's
    servers bind themselves)."""
    c = cfg.cluster
    sockets, cores = int(c.get("sockets_per_node", 0) or 0), int(c.get("cores_per_socket", 0) or 0)
    if processes <= 1 or sockets < 1 or cores < 1:
        return None
    return core_blocks(processes, sockets, cores, int(c.get("reserved_cores_per_socket", 0) or 0))


def mpiexec_list(blocks: List[Tuple[int, int]]) -> str:
    """PALS/Cray mpiexec's form: `list:1-8:9-16:...`, one block per local rank."""
    return "list:" + ":".join(f"{first}-{last}" for first, last in blocks)


def srun_masks(blocks: List[Tuple[int, int]]) -> str:
    """srun's form: `mask_cpu:0x1fe,0x1fe00,...`, one hex mask per local task."""
    return "mask_cpu:" + ",".join(hex(((1 << (last - first + 1)) - 1) << first) for first, last in blocks)
