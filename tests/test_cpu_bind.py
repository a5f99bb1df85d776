"""CPU binding per rank (runner/cpu_bind.py): the blocks of cores on the composed cluster configs, what the PBS and
Slurm launchers pass (the per_tile PBS goldens in tests/golden hold Aurora's lists), and the servers a
server_per_node host runs (runner/host_servers.py); no engine."""


import pytest

from helpers.compose import compose_config
from launchers import pbs, slurm
from runner import cpu_bind
from runner.errors import ConfigError



_cfg = compose_config


def test_12_aurora_ranks_get_alcfs_blocks_of_8_cores_leaving_cores_0_and_52_to_the_os():
    blocks = cpu_bind.node_blocks(_cfg("cluster=aurora"), 12)
    assert cpu_bind.mpiexec_list(blocks) == ("list:1-8:9-16:17-24:25-32:33-40:41-48:"
                                             "53-60:61-68:69-76:77-84:85-92:93-100")
    assert cpu_bind.node_blocks(_cfg("cluster=aurora"), 2) == [(1, 51), (53, 103)]
    assert cpu_bind.srun_masks(cpu_bind.node_blocks(_cfg("cluster=polaris"), 4)) == (
        "mask_cpu:0xff,0xff00,0xff0000,0xff000000")


def test_one_process_per_node_and_a_cluster_without_cores_are_not_bound():
    assert cpu_bind.node_blocks(_cfg("cluster=aurora"), 1) is None  # a host's servers bind themselves
    assert cpu_bind.node_blocks(_cfg("cluster=local_cpu"), 2) is None


def test_more_processes_than_cores_are_refused_naming_the_fix():
    with pytest.raises(ConfigError, match=r"^13 processes per node do not get a core each .*cores_per_socket=0"):
        cpu_bind.core_blocks(13, 1, 13, 1)


def test_the_pbs_line_binds_ranks_unless_mpiexec_args_bind_and_slurm_passes_masks_to_srun():
    cfg = _cfg("cluster=aurora", "model=gpt_oss_120b", "launcher=pbs", "launcher.queue=q", "launcher.account=a")
    assert pbs._cpu_bind(cfg, 3) == ["--cpu-bind", "list:1-25:26-50:53-77"] and pbs._cpu_bind(cfg, 1) == []
    own = _cfg("cluster=aurora", "launcher=pbs", "launcher.queue=q", "launcher.account=a",
               "launcher.mpiexec_args=[--cpu-bind,depth,-d,'8']")
    assert pbs._cpu_bind(own, 12) == []
    polaris = _cfg("cluster=polaris", "+engine.tensor_parallel_size=2", "launcher=slurm")
    assert slurm._cpu_bind(polaris) == ["--cpu-bind=mask_cpu:0xffff,0xffff0000"]
    assert slurm._cpu_bind(_cfg("cluster=polaris", "mode=server_per_node", "launcher=slurm")) == []


def test_server_per_node_refuses_an_engine_across_nodes_naming_per_tile():
    from runner import host_servers

    with pytest.raises(ConfigError, match=r"^an engine of 2 nodes \(on Ray\) runs in mode=per_tile only"):
        host_servers.host_layout(_cfg("cluster=aurora", "nodes=4", "model=llama3_405b", "mode=server_per_node"))
    assert len(host_servers.host_layout(_cfg("cluster=local_cpu", "mode=server_per_node")).engines) == 1
    assert len(host_servers.host_layout(_cfg("cluster=local_cpu", "mode=server_per_node",
                                             "cluster.engines=[1,1]")).engines) == 2
