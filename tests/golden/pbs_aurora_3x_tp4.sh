#!/bin/bash
#PBS -N runner-gpt_oss_120b-per_tile-4n
#PBS -l select=4
#PBS -l walltime=01:00:00
#PBS -l filesystems=home:flare
#PBS -l place=scatter
#PBS -q prod
#PBS -A Proj
#PBS -j oe
set -euo pipefail
export RUNNER_DEADLINE=$(( $(date +%s) + 3600 ))
export RUNNER_ATTEMPT="${PBS_JOBID:-pbs}-$(date +%s)-$$"
cd /RUN
exec >> logs/job.log 2>&1
echo "runner: job ${PBS_JOBID:-?} on $(sort -u "$PBS_NODEFILE" | wc -l) node(s)"
trap '/PYTHON -u -m runner.run_lock release /RUN/job.yaml' EXIT
/PYTHON -u -m runner.run_lock claim /RUN/job.yaml
mpiexec -n 12 -ppn 3 --cpu-bind list:1-25:26-50:53-77 --hostfile "$PBS_NODEFILE" /PYTHON -u -m runner.worker /RUN/job.yaml
/PYTHON -u -m runner.summary /RUN/job.yaml
