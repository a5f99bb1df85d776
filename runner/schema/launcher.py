"""The launcher group: how the job starts; one schema per launcher."""

from dataclasses import dataclass, field
from typing import Any, Dict, List

from omegaconf import MISSING

from runner.schema.fields import at_least


@dataclass
class LauncherConfig:
    """What every launcher has: its class and the job's walltime."""

    # the launchers.base.Launcher subclass that starts the job
    _target_: str = MISSING
    name: str = MISSING
    # minutes the whole job may run (the scheduler's walltime; under launcher=local 0 is no limit)
    walltime_min: int = 60


@dataclass
class LocalLauncherConfig(LauncherConfig):
    """Ranks and servers run as processes of this machine; no scheduler."""

    _target_: str = "launchers.local.LocalLauncher"
    name: str = "local"
    walltime_min: int = 0
    # vLLM engines the job may start on this machine (a rank's or a server's each): nodes=2048 meant for a
    # cluster launcher would otherwise start thousands here
    max_engines: int = at_least(1, 64)


@dataclass
class PbsLauncherConfig(LauncherConfig):
    """A rendered PBS script submitted with qsub; ranks start through mpiexec."""

    _target_: str = "launchers.pbs.PbsLauncher"
    name: str = "pbs"
    # minutes of the job's walltime (-l walltime=): PBS has no "no limit"
    walltime_min: int = at_least(1, 60)
    # PBS queue (-q)
    queue: str = MISSING
    # PBS project (-A)
    account: str = MISSING
    # -l filesystems=..., e.g. home:flare (Aurora) or home:eagle (Polaris)
    filesystems: str = "home"
    # -l place=...
    place: str = "scatter"
    # scheduler and MPI launcher binaries
    qsub: str = "qsub"
    mpiexec: str = "mpiexec"
    # extra mpiexec arguments, e.g. [--cpu-bind, depth, -d, "16"]
    mpiexec_args: List[str] = field(default_factory=list)
    # shell lines run before the job's steps, e.g. module loads
    setup: List[str] = field(default_factory=list)


@dataclass
class SlurmLauncherConfig(LauncherConfig):
    """A Slurm job submitted through submitit; one task per rank (per_tile) or per host (server_per_node).
    --gpus-per-node is cluster.gpus_per_node."""

    _target_: str = "launchers.slurm.SlurmLauncher"
    name: str = "slurm"
    # --partition; empty: the cluster's default
    partition: str = ""
    # --account; empty: none
    account: str = ""
    # CPUs per task (--cpus-per-task)
    cpus_per_task: int = at_least(1, 1)
    # memory per node in GB (--mem); 0: the cluster's default
    mem_gb: int = 0
    # shell lines run before the job's steps, e.g. module loads
    setup: List[str] = field(default_factory=list)
    # extra sbatch parameters, submitit's `slurm_additional_parameters`
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    # block until the job ends and print its summary (a sweep then runs its jobs one after another)
    wait: bool = False
