"""Rank discovery from each launcher's environment, and the compact-then-round-robin device map."""

from runner.devices import device_env, device_of
from runner.schema import Accelerator
from runner.topology import discover


def test_lone_process_is_rank_zero_of_one():
    p = discover({})
    assert (p.rank, p.local_rank, p.world_size, p.local_size) == (0, 0, 1, 1)


def test_mpich_hydra_variables():
    p = discover({"PMI_RANK": "5", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "4"})
    assert (p.rank, p.local_rank, p.world_size, p.local_size, p.node) == (5, 1, 8, 4, 1)


def test_pals_variables_win_over_pmi():
    p = discover({"PALS_RANKID": "13", "PALS_LOCAL_RANKID": "1", "PMI_SIZE": "24", "PALS_LOCAL_SIZE": "12",
                  "PMI_RANK": "13"})
    assert (p.rank, p.local_rank, p.node) == (13, 1, 1)


def test_slurm_variables_with_repeated_tasks_per_node():
    p = discover({"SLURM_PROCID": "6", "SLURM_LOCALID": "2", "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4(x2)"})
    assert (p.rank, p.local_rank, p.world_size, p.local_size, p.node) == (6, 2, 8, 4, 1)


def test_open_mpi_variables():
    p = discover({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"})
    assert (p.rank, p.local_rank, p.world_size) == (3, 3, 4)


def test_aurora_map_is_compact_then_round_robin():
    # 6 GPUs x 2 tiles: devices 0,1 -> GPU 0 tiles 0,1; device 11 -> GPU 5 tile 1; device 12 wraps to GPU 0
    assert [device_of(r, 6, 2) for r in (0, 1, 2, 11, 12, 13)] == [(0, 0), (0, 1), (1, 0), (5, 1), (0, 0), (0, 1)]
    assert device_env([3], Accelerator.intel, 6, 2) == {"ZE_AFFINITY_MASK": "1.1"}
    assert device_env([2, 3], Accelerator.intel, 6, 2) == {"ZE_AFFINITY_MASK": "1.0,1.1"}
    assert device_env([2, 3], Accelerator.intel, 6, 2, flat_hierarchy=True) == {"ZE_AFFINITY_MASK": "2,3"}


def test_nvidia_sets_cuda_visible_devices_and_cpu_sets_nothing():
    assert device_env([1], Accelerator.nvidia, 4, 1) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert device_env([2, 3], Accelerator.nvidia, 4, 1) == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert device_env([0, 1], Accelerator.cpu, 0, 1) == {}
