#!/usr/bin/env bash
# The test command (README, .ci/run): install, start the one-node Slurm cluster, run every test for real.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/start_slurm.sh
exec .venv/bin/python -m pytest -v --durations=15 "$@"
