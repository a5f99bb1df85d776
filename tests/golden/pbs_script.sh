#!/bin/bash
#PBS -N runner-genes__v2_
#PBS -l select=4
#PBS -l walltime=01:30:00
#PBS -l filesystems=home:flare
#PBS -l place=scatter
#PBS -q 'debug scaling'
#PBS -A 'my'"'"'proj'
#PBS -j oe
set -euo pipefail
export RUNNER_DEADLINE=$(( $(date +%s) + 5400 ))
export RUNNER_ATTEMPT="${PBS_JOBID:-pbs}-$(date +%s)-$$"
module load frameworks
cd '/lus/my project/run '"'"'a'"'"''
exec >> logs/job.log 2>&1
echo "runner: job ${PBS_JOBID:-?} on $(sort -u "$PBS_NODEFILE" | wc -l) node(s)"
trap ''"'"'/opt/venv x/bin/python'"'"' -u -m runner.run_lock release '"'"'/lus/my project/run '"'"'"'"'"'"'"'"'a'"'"'"'"'"'"'"'"'/job.yaml'"'"'' EXIT
'/opt/venv x/bin/python' -u -m runner.run_lock claim '/lus/my project/run '"'"'a'"'"'/job.yaml'
mpiexec -n 4 -ppn 1 --cpu-bind list:1-8 --hostfile "$PBS_NODEFILE" '/opt/venv x/bin/python' -u -m runner.staging '/lus/my project/run '"'"'a'"'"'/job.yaml'
mpiexec -n 48 -ppn 12 --cpu-bind list:1-8 --hostfile "$PBS_NODEFILE" '/opt/venv x/bin/python' -u -m runner.worker '/lus/my project/run '"'"'a'"'"'/job.yaml'
'/opt/venv x/bin/python' -u -m runner.summary '/lus/my project/run '"'"'a'"'"'/job.yaml'
