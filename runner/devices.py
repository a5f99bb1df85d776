"""Map a local rank to one GPU or tile, as the original gpu_tile_compact.sh: compact, then round-robin."""

from typing import Dict

from runner.schema import Accelerator

DEVICE_VARS = ("CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")


def device_of(local_rank: int, gpus_per_node: int, tiles_per_gpu: int) -> tuple[int, int]:
    """(gpu, tile) of a local rank: gpu = (r // tiles) % gpus, tile = r % tiles."""
    tiles = max(tiles_per_gpu, 1)
    return (local_rank // tiles) % gpus_per_node, local_rank % tiles


def device_env(local_rank: int, accelerator: Accelerator, gpus_per_node: int, tiles_per_gpu: int) -> Dict[str, str]:
    """The environment variables that pin a rank to its device; none on CPU."""
    if accelerator == Accelerator.cpu or gpus_per_node <= 0:
        return {}
    gpu, tile = device_of(local_rank, gpus_per_node, tiles_per_gpu)
    if accelerator == Accelerator.intel:
        return {"ZE_AFFINITY_MASK": f"{gpu}.{tile}"}
    return {"CUDA_VISIBLE_DEVICES": str(gpu)}
