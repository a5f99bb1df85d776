#!/usr/bin/env bash
# Model folders for the GPU benchmark, into .benchmodels/ (git-ignored, carried with .whl):
#   smollm2-135m/  SmolLM2-135M-Instruct config + tokenizer (weights: load_format=dummy, or --real below)
#   llama-3.1-8b/  the Llama-3.1-8B architecture (benchmarks/device/llama-3.1-8b-config.json) with SmolLM2's
#                  tokenizer: load_format=dummy, so only shapes matter
# Needs the SmolLM2 folder that `python -m runner` builds (~/.cache/runner/models/SmolLM2-135M-Instruct).
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${SMOLLM2_DIR:-$HOME/.cache/runner/models/SmolLM2-135M-Instruct}
[ -f "$src/config.json" ] || .venv/bin/python -c "from runner.models import build_smollm2; from pathlib import Path; build_smollm2(Path('$src'))"
rm -rf .benchmodels && mkdir -p .benchmodels/smollm2-135m .benchmodels/llama-3.1-8b
for f in config.json generation_config.json tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
  [ -f "$src/$f" ] && cp "$src/$f" .benchmodels/smollm2-135m/
done
cp .benchmodels/smollm2-135m/tokenizer* .benchmodels/llama-3.1-8b/
cp benchmarks/device/llama-3.1-8b-config.json .benchmodels/llama-3.1-8b/config.json
du -sh .benchmodels/*
