"""The engine and sampling argument names of the installed vLLM, for checking a config before a job is launched.

Importing vLLM takes 8 s on a CPU and 20-25 s on a cold GPU node, once per launch. The names are cached by the
content of the two files that define them (vllm/engine/arg_utils.py, vllm/sampling_params.py), under
$RUNNER_CACHE_DIR or ~/.cache/runner, so only the first launch with an installed vLLM pays for the import.

vLLM is imported in a child process, never in the launcher: the import writes into the process's environment
(OpenCV puts its lib64 in front of LD_LIBRARY_PATH, vLLM and Triton set TORCHINDUCTOR_COMPILE_THREADS,
TRITON_CACHE_AUTOTUNING, ...), and every rank the launcher starts would inherit that (seen on an H200: the
first launch on a fresh machine gave its ranks five variables the raw vLLM baseline did not have).
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Set

from runner.errors import ConfigError

_DEFINING_FILES = ("engine/arg_utils.py", "sampling_params.py")


def known_names() -> Dict[str, Set[str]]:
    """{"engine": EngineArgs field names, "sampling": SamplingParams field names}."""
    cache = _cache_file()
    if cache is not None and cache.is_file():
        return {k: set(v) for k, v in json.loads(cache.read_text()).items()}
    names = _names_from_vllm()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: sorted(v) for k, v in names.items()}))
        tmp.replace(cache)
    return names


_READ_NAMES = """
import dataclasses, json
from vllm import EngineArgs, SamplingParams
print(json.dumps({"engine": [f.name for f in dataclasses.fields(EngineArgs)],
                  "sampling": list(SamplingParams.__struct_fields__)}))
"""


def _names_from_vllm() -> Dict[str, Set[str]]:
    """Read in a child process (see the module's docstring); the names are its last line of output."""
    proc = subprocess.run([sys.executable, "-c", _READ_NAMES], capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"vLLM cannot be imported here ({why}): install vllm where the job is launched")
    return {k: set(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def _cache_file() -> Optional[Path]:
    """The cache entry of the installed vLLM's sources; None when they cannot be read (no cache then)."""
    spec = importlib.util.find_spec("vllm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(list(spec.submodule_search_locations)[0])
    digest = hashlib.sha256()
    for name in _DEFINING_FILES:
        try:
            digest.update((package / name).read_bytes())
        except OSError:
            return None
    root = Path(os.environ.get("RUNNER_CACHE_DIR") or Path.home() / ".cache" / "runner")
    return root / "vllm-names" / f"{digest.hexdigest()[:16]}.json"
