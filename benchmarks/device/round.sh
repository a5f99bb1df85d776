#!/usr/bin/env bash
# On the GPU machine: one benchmark call, with two samplers beside it every second: the GPU's utilisation, SM
# clock, temperature and power (a round that lags can then be told from a throttled GPU), and the host's CPU
# counters from /proc/stat (steal time shows a neighbour on a shared host; busy time, how loaded the host was),
# and each busy engine thread's vCPU and CPU ticks (benchmarks/device/threads.py).
# After it, each leg log's start-up lines (import, weights, torch.compile, graph capture, API server, the engine's
# whole resolved config) go to one file, so a slow engine start or a leg's other engine can be told apart without
# the logs. The results file is appended to: the copy in
# benchmarks/results/ (brought back by the last call), or the machine's own if it has more legs, is its start;
# $OUT/FILE gets every leg.
#   usage: bash benchmarks/device/round.sh FILE BENCH_ARGS...   (after install_on_device.sh)
set -u
file=$1; shift
stem=${file%.json}-$(date +%s)
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
# the machine's own copy of the file (kept in /tmp across the calls of one lease) when it has more legs than the
# working tree's: a call whose results were not copied back into benchmarks/results/ before the next call is kept
legs() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["legs"]))' "$1" 2>/dev/null || echo 0; }
kept=/tmp/results/$file
mkdir -p /tmp/results
if [ -f "$kept" ] && [ "$(legs "$kept")" -gt "$(legs "benchmarks/results/$file")" ]; then
  cp "$kept" "$OUT/$file"
elif [ -f "benchmarks/results/$file" ]; then
  cp "benchmarks/results/$file" "$OUT/$file"
fi
touch /tmp/round-start
nvidia-smi --query-gpu=timestamp,utilization.gpu,clocks.sm,temperature.gpu,power.draw \
  --format=csv,noheader,nounits -lms 1000 > "$OUT/gpu-$stem.csv" &
smi=$!
{ lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|Hypervisor)'; \
  echo "# unix_time cpu user nice system idle iowait irq softirq steal guest guest_nice"; \
  while sleep 1; do echo "$(date +%s) $(head -1 /proc/stat)"; done; } > "$OUT/cpu-$stem.txt" &
cpu=$!
python3 benchmarks/device/threads.py "$OUT/threads-$stem.txt" &
threads=$!
python3 benchmarks/bench_vs_raw.py --append --out "$OUT/$file" --work-dir /tmp/bench "$@"
rc=$?
[ -f "$OUT/$file" ] && cp "$OUT/$file" "$kept"
kill $smi $cpu $threads
find /tmp/bench -name '*.log' -newer /tmp/round-start -print0 | xargs -0 -r grep -H -E \
  'Loading weights took|Model loading took|torch.compile takes|Compil(ing|ation) .* took|Graph capturing finished|init engine|Starting vLLM API server|Application startup complete|Available KV cache|Dynamo bytecode transform|cache directory|Directly load the compiled|non-default args|version [0-9]|with config: |[Aa]sync.* sched' \
  > "$OUT/start-$stem.txt" 2>/dev/null
exit $rc
