#!/usr/bin/env bash
# On the GPU machine, after the two GGUF parts were copied to /tmp/g: SmolLM2-135M-Instruct as an HF
# safetensors folder at /tmp/smollm2-135m (bf16, dequantized by transformers + gguf, as runner does on CPU).
set -euo pipefail
[ -f /tmp/smollm2-135m/config.json ] && exit 0
mkdir -p /tmp/gguf && cat /tmp/g/part.* > /tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
python3 -c "from pathlib import Path; from runner.models import build_from_gguf
build_from_gguf(Path('/tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf'), Path('/tmp/smollm2-135m'))"
ls -la /tmp/smollm2-135m
