#!/bin/bash

# Parameters
#SBATCH --account=Proj
#SBATCH --cpus-per-task=1
#SBATCH --error=/RUN/slurm/%j_0_log.err
#SBATCH --gpus-per-node=6
#SBATCH --job-name=runner-gpt_oss_120b-per_tile-4n
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=2
#SBATCH --open-mode=append
#SBATCH --output=/RUN/slurm/%j_0_log.out
#SBATCH --partition=prod
#SBATCH --signal=USR2@90
#SBATCH --time=60
#SBATCH --wckey=submitit

# setup

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /RUN/slurm/%j_%t_log.out --error /RUN/slurm/%j_%t_log.err --cpu-bind=mask_cpu:0xffffffffffffe,0xffffffffffffe0000000000000 /PYTHON -u -m submitit.core._submit /RUN/slurm
