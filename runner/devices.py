"""The variable that pins one engine to its devices of a node: ZE_AFFINITY_MASK on Intel, CUDA_VISIBLE_DEVICES on
NVIDIA, nothing on CPU. Devices are numbered 0..n-1 on a node, compact: tiles of GPU 0 first, then GPU 1 (as the
original gpu_tile_compact.sh)."""

from typing import Dict, Sequence

from runner.schema import Accelerator

DEVICE_VARS = ("CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")


def device_of(device: int, gpus_per_node: int, tiles_per_gpu: int) -> tuple[int, int]:
    """(gpu, tile) of a device of the node: gpu = (d // tiles) % gpus, tile = d % tiles."""
    tiles = max(tiles_per_gpu, 1)
    return (device // tiles) % gpus_per_node, device % tiles


def device_env(devices: Sequence[int], accelerator: Accelerator, gpus_per_node: int, tiles_per_gpu: int,
               flat_hierarchy: bool = False) -> Dict[str, str]:
    """The variable that shows an engine its devices and no other; none on CPU.

    Intel: with ZE_FLAT_DEVICE_HIERARCHY=FLAT every tile is a device of its own and the mask lists tile numbers
    (0,1,2,3); otherwise (COMPOSITE) it lists gpu.tile (0.0,0.1,1.0,1.1).
    """
    if accelerator == Accelerator.cpu or gpus_per_node <= 0:
        return {}
    if accelerator == Accelerator.intel and not flat_hierarchy:
        places = (device_of(d, gpus_per_node, tiles_per_gpu) for d in devices)
        return {"ZE_AFFINITY_MASK": ",".join(f"{gpu}.{tile}" for gpu, tile in places)}
    var = "ZE_AFFINITY_MASK" if accelerator == Accelerator.intel else "CUDA_VISIBLE_DEVICES"
    return {var: ",".join(str(d) for d in devices)}
