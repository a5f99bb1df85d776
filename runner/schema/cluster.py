"""The cluster group: a machine's devices, cores, environment and engine arguments."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List

from omegaconf import MISSING

from runner.schema.fields import at_least


class Accelerator(Enum):
    cpu = "cpu"
    nvidia = "nvidia"
    intel = "intel"


@dataclass
class ClusterConfig:
    name: str = MISSING
    # cpu: no device variables; nvidia: CUDA_VISIBLE_DEVICES=0,1; intel: ZE_AFFINITY_MASK, listing tile numbers
    # (0,1) when env sets ZE_FLAT_DEVICE_HIERARCHY=FLAT, else gpu.tile (0.0,0.1)
    accelerator: Accelerator = Accelerator.cpu
    # GPUs per node
    gpus_per_node: int = 0
    # tiles (stacks) per GPU; 1 on NVIDIA. A node's devices are gpus_per_node x tiles_per_gpu (runner/layout.py)
    tiles_per_gpu: int = at_least(1, 1)
    # CPU slots per node when there is no GPU (accelerator=cpu or gpus_per_node=0): the devices engines are laid
    # out on (local slots per machine under launcher=local); GPU clusters count gpus_per_node x tiles_per_gpu
    ranks_per_node: int = at_least(1, 1)
    # devices of each engine on a node, for mixed layouts (e.g. [8, 4]: a TP 8 engine on tiles 0-7 beside a TP 4
    # engine on tiles 8-11); each entry's tensor_parallel_size is entry / pipeline_parallel_size. Empty: as many
    # engines of tensor_parallel_size x pipeline_parallel_size devices as the node holds
    engines: List[int] = at_least(1, factory=list)
    # CPU sockets per node and physical cores per socket (numbered socket by socket, as on Aurora: socket 1 from
    # core 52), and the first cores of each socket left to the OS; with them each rank of a node is bound to its
    # own block of cores (mpiexec --cpu-bind list:..., srun --cpu-bind=mask_cpu:...; a server_per_node host binds
    # each of its servers): runner/cpu_bind.py. cores_per_socket 0: no binding
    sockets_per_node: int = at_least(1, 1)
    cores_per_socket: int = 0
    reserved_cores_per_socket: int = 0
    # vLLM engine arguments for this machine; they override the model's
    engine: Dict[str, Any] = field(default_factory=dict)
    # environment variables for every rank and server
    env: Dict[str, str] = field(default_factory=dict)
    # node-local folder that holds each node's Ray session (RAY_TMPDIR) when an engine spans nodes; the session is
    # removed when the node's rank ends
    ray_tmpdir: str = "/tmp"
    # extra `ray start` arguments on every node of an engine across nodes, e.g. ["--object-store-memory=2000000000"]
    # (bytes)
    ray_start_args: List[str] = field(default_factory=list)
