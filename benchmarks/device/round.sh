#!/usr/bin/env bash
# On the GPU machine: one benchmark call, the GPU's utilisation, SM clock, temperature and power sampled beside
# it every second (a round that lags can then be told from a throttled GPU). The results file is appended to:
# the copy in benchmarks/results/ (brought back by the last call) is its start, $OUT/FILE gets every leg.
#   usage: bash benchmarks/device/round.sh FILE BENCH_ARGS...   (after install_on_device.sh)
set -u
file=$1; shift
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
[ -f "benchmarks/results/$file" ] && cp "benchmarks/results/$file" "$OUT/$file"
nvidia-smi --query-gpu=timestamp,utilization.gpu,clocks.sm,temperature.gpu,power.draw \
  --format=csv,noheader,nounits -lms 1000 > "$OUT/gpu-${file%.json}-$(date +%s).csv" &
smi=$!
python3 benchmarks/bench_vs_raw.py --append --out "$OUT/$file" --work-dir /tmp/bench "$@"
rc=$?
kill $smi
exit $rc
