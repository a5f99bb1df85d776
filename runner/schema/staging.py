"""The staging group: how the weights reach the nodes."""

from dataclasses import dataclass

from omegaconf import MISSING

from runner.schema.fields import at_least


@dataclass
class StagingConfig:
    """How the weights reach the nodes."""

    # the runner.staging.Staging subclass that stages them
    _target_: str = MISSING
    name: str = MISSING


@dataclass
class NoStagingConfig(StagingConfig):
    """Workers read the weights where model.path points."""

    _target_: str = "runner.staging.NoStaging"
    name: str = "none"


@dataclass
class MpiBcastStagingConfig(StagingConfig):
    """Rank 0 reads the model folder once and MPI-broadcasts it to a node-local folder on every node."""

    _target_: str = "runner.staging.MpiBcastStaging"
    name: str = "mpi_bcast"
    # node-local folder the weights are copied into, e.g. /tmp or /dev/shm
    target_dir: str = "/tmp/runner-models"
    # MiB per MPI broadcast
    chunk_mib: int = at_least(1, 1024)
