"""How a job reaches the nodes: local processes, a PBS script through qsub, or a Slurm job through submitit."""


def launcher_for(name: str):
    """The launcher object of a launcher config's name (imported lazily: submitit only for slurm)."""
    if name == "local":
        from launchers.local import LocalLauncher

        return LocalLauncher()
    if name == "pbs":
        from launchers.pbs import PbsLauncher

        return PbsLauncher()
    from launchers.slurm import SlurmLauncher

    return SlurmLauncher()
