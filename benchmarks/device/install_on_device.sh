#!/usr/bin/env bash
# On the GPU machine: join the vLLM wheel parts copied to /tmp/w, install it and .whl/* into /tmp/site.
# Use with: export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
name=$(cat .whl/VLLM_WHEEL_NAME)
if [ ! -d /tmp/site/vllm ]; then
  cat /tmp/w/part.* > "/tmp/$name"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "/tmp/$name" .whl/*.whl
fi
PYTHONPATH=/tmp/site python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
