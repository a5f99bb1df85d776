"""Where this process sits in the job: rank, local rank, node index. Read from the launcher's environment.

This is the one place that knows each launcher's variables: MPICH/PALS/PMI, Open MPI, PMIx, Slurm,
and the runner's own (set by launcher=local).
"""

import os
import socket
from dataclasses import dataclass
from typing import Mapping, Optional

# (rank, local rank, world size, local size) variables, first match wins.
_SOURCES = (
    ("RUNNER_RANK", "RUNNER_LOCAL_RANK", "RUNNER_WORLD_SIZE", "RUNNER_LOCAL_SIZE"),
    ("PALS_RANKID", "PALS_LOCAL_RANKID", "PMI_SIZE", "PALS_LOCAL_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("PMIX_RANK", "PMIX_LOCAL_RANK", "PMIX_SIZE", "PMIX_LOCAL_SIZE"),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", "MPI_LOCALNRANKS"),
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE"),
)


# the address this node's processes are reached at by the job's other nodes (launcher=local gives each of its
# "nodes", processes of one machine, a loopback address of its own); unset: the host name's
NODE_IP_VAR = "RUNNER_NODE_IP"


def node_ip(env: Optional[Mapping[str, str]] = None) -> str:
    """This node's address for the job's other nodes (a Ray cluster's head and its workers)."""
    env = os.environ if env is None else env
    return env.get(NODE_IP_VAR) or socket.gethostbyname(socket.gethostname())


@dataclass(frozen=True)
class Placement:
    rank: int
    local_rank: int
    world_size: int
    local_size: int
    hostname: str

    @property
    def node(self) -> int:
        """Node index, assuming ranks are placed in blocks of local_size (mpiexec -ppn, Slurm block)."""
        return self.rank // max(self.local_size, 1)


def _int(env: Mapping[str, str], name: str) -> Optional[int]:
    value = env.get(name, "").split("(")[0]  # SLURM_NTASKS_PER_NODE may read "4(x2)"
    return int(value) if value.strip().isdigit() else None


def discover(env: Optional[Mapping[str, str]] = None) -> Placement:
    """The placement of this process; a lone process outside any launcher is rank 0 of 1."""
    env = os.environ if env is None else env
    for rank_var, local_var, size_var, local_size_var in _SOURCES:
        rank = _int(env, rank_var)
        if rank is None:
            continue
        world = _int(env, size_var) or rank + 1
        local_size = _int(env, local_size_var) or world
        local_rank = _int(env, local_var)
        if local_rank is None:
            local_rank = rank % local_size
        return Placement(rank, local_rank, world, local_size, socket.gethostname())
    return Placement(0, 0, 1, 1, socket.gethostname())
