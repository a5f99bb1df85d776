#!/usr/bin/env bash
# On the GPU machine, beside a benchmark run: sample GPU utilisation and memory every 200 ms, and py-spy every
# process that drives or runs an engine (raw leg, per_tile rank, vllm serve, their EngineCore), each for its whole
# life. Start it before the benchmark, stop it after (kill its process group); then
#   python3 benchmarks/profile_summary.py RESULTS.json DIR   summarises both per leg.
#   usage: bash benchmarks/device/profile_legs.sh DIR &
set -u
dir=$1
mkdir -p "$dir"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$dir/gpu.csv" &
pyspy=$(command -v py-spy || echo /tmp/site/bin/py-spy)
declare -A seen
while true; do
  for pid in $(pgrep -f 'bench_vs_raw.py raw|runner.worker|vllm.entrypoints.openai.api_server|VLLM::EngineCore'); do
    [ -n "${seen[$pid]:-}" ] && continue
    seen[$pid]=1
    args=$(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null) || continue
    case "$args" in
      *runner.server_guard*|*pgrep*) continue ;;
      *"bench_vs_raw.py raw"*) kind=raw ;;
      *runner.worker*) kind=per_tile ;;
      *api_server*) kind=server ;;
      *) kind=enginecore ;;
    esac
    tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | sort > "$dir/env-$kind-$pid.txt"
    "$pyspy" record --nonblocking -r 50 -f raw -p "$pid" -o "$dir/spy-$kind-$pid-$(date +%s).txt" > /dev/null 2>&1 &
  done
  sleep 1
done
