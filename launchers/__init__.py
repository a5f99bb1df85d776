"""How a job reaches the nodes: local processes, a PBS script through qsub, or a Slurm job through submitit.
Each launcher is a launchers.base.Launcher subclass named by its config's `_target_` (runner.options)."""
