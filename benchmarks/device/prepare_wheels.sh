#!/usr/bin/env bash
# Prepare vLLM 0.24.0 for the lent GPU machine (torch 2.11 + CUDA 13, Python 3.12, no network there).
# Writes .whl/ (the pure-Python deps vLLM needs beyond the image, ~40 MB) and .wheelparts/p0..pN (the vLLM
# wheel split in 56 MB parts): each fits one device call's 64 MiB carry. Both folders are git-ignored.
# Then, on the device, back to back (the machine stays warm 30 s):
#   carry [.wheelparts/p0]: mkdir -p /tmp/w && cp .wheelparts/p0/* /tmp/w/      (and so on for p1..pN)
#   carry [.whl]:           bash benchmarks/device/install_on_device.sh   (joins the parts, installs to /tmp/site)
set -euo pipefail
cd "$(dirname "$0")/../.."
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_31_x86_64
      --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux1_x86_64 --platform any)
deps=(cachetools blake3 "fastapi<0.137" starlette uvicorn "openai<3" pydantic pydantic-core annotated-types
      typing-inspection prometheus-fastapi-instrumentator lm-format-enforcer==0.11.3 interegular "llguidance<1.8"
      outlines_core==0.2.14 diskcache==5.6.3 lark==1.2.2 xgrammar partial-json-parser jsonschema
      jsonschema-specifications referencing rpds-py pyzmq msgspec mistral_common pydantic-extra-types pycountry
      compressed-tensors==0.17.0 depyf==0.20.0 astor dill watchfiles python-json-logger pybase64 cbor2 ijson
      setproctitle openai-harmony anthropic distro jiter sniffio docstring-parser model-hosting-container-standards
      gguf python-multipart fastsafetensors "apache-tvm-ffi>=0.1.11" aiohttp aiohappyeyeballs aiosignal frozenlist
      multidict propcache yarl hydra-core omegaconf submitit cloudpickle uvloop h11 httptools click jmespath supervisor annotated-doc prometheus-client)
rm -rf .whl .wheelparts /tmp/runner-vllm-wheel
mkdir -p .whl .wheelparts /tmp/runner-vllm-wheel
python3 -m pip download -q --no-deps "${plat[@]}" -d /tmp/runner-vllm-wheel vllm==0.24.0
python3 -m pip download -q --no-deps "${plat[@]}" -d .whl "${deps[@]}"
# hydra-core 1.3 needs antlr4 4.9.3 exactly, which PyPI has as an sdist only: build its (pure-Python) wheel here
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
(cd /tmp/runner-vllm-wheel && split -b 56M vllm-0.24.0-*.whl part.)
i=0
for part in /tmp/runner-vllm-wheel/part.*; do mkdir -p .wheelparts/p$i; mv "$part" .wheelparts/p$i/; i=$((i+1)); done
basename /tmp/runner-vllm-wheel/vllm-*.whl > .whl/VLLM_WHEEL_NAME
du -sh .whl .wheelparts/*
