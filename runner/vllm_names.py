"""What the installed vLLM accepts, for checking a config before a job is launched: its engine and sampling
argument names, the simple types of its engine arguments, and whether it builds a given `SamplingParams`.

Importing vLLM takes 8 s on a CPU and 20-25 s on a cold GPU node, once per launch. The answers are cached by the
content of the two files that define them (vllm/engine/arg_utils.py, vllm/sampling_params.py), under
$RUNNER_CACHE_DIR or ~/.cache/runner, so only the first launch with an installed vLLM (and, for the sampling
check, the first with a given `sampling` dict) pays for the import.

vLLM is imported in a child process (`python -m runner.vllm_names`), never in the launcher: the import writes into
the process's environment (OpenCV puts its lib64 in front of LD_LIBRARY_PATH, vLLM and Triton set
TORCHINDUCTOR_COMPILE_THREADS, TRITON_CACHE_AUTOTUNING, ...), and every rank the launcher starts would inherit that
(seen on an H200: the first launch on a fresh machine gave its ranks five variables the raw vLLM baseline did not
have).
"""

import dataclasses
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional

from runner import atomic
from runner.errors import ConfigError

_DEFINING_FILES = ("engine/arg_utils.py", "sampling_params.py")
# bumped when what the cache holds changes, so an older cache entry is not read as a newer one
_CACHE_FORMAT = b"2"
_SIMPLE_TYPES = {bool: "bool", int: "int", float: "float", str: "str", type(None): "None"}


def known_names() -> Dict[str, Any]:
    """{"engine": EngineArgs field names, "sampling": SamplingParams field names,
    "engine_types": {field: accepted types (names, or {"choices": [...]})} for the fields of simple types}."""
    names = _cached("vllm-names", "", lambda: _in_child("names"))
    return {**names, "engine": set(names["engine"]), "sampling": set(names["sampling"])}


def sampling_problem(sampling: Dict[str, Any]) -> str:
    """'' when vLLM builds SamplingParams(**sampling), else vLLM's reason, naming the key where it says which."""
    key = json.dumps(sampling, sort_keys=True, default=str)
    return _cached("vllm-sampling", key, lambda: _in_child("sampling", key))["problem"]


def engine_type_problems(where: str, engine: Dict[str, Any], engine_types: Dict[str, list]) -> List[str]:
    """The engine arguments whose value is not of the type vLLM declares for them (only simple types checked)."""
    problems = []
    for name, value in engine.items():
        accepted = engine_types.get(name)
        if accepted is not None and not any(_fits(value, kind) for kind in accepted):
            shown = [kind if isinstance(kind, str) else f"one of {kind['choices']}" for kind in accepted]
            problems.append(f"{where}.{name}={value!r} is not {' or '.join(shown)}")
    return problems


def _fits(value: Any, kind) -> bool:
    if isinstance(kind, dict):
        return value in kind["choices"]
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return type(value).__name__ == kind or (kind == "None" and value is None)


def _build_sampling(sampling: Dict[str, Any]) -> str:
    SamplingParams = _import_vllm().SamplingParams
    try:
        SamplingParams(**sampling)
    except Exception as e:  # noqa: BLE001 - whatever vLLM refuses the values with is the user's message
        key = getattr(e, "parameter", None)
        where = f"sampling.{key}" if key else f"sampling={sampling}"
        return f"{where} is refused by vLLM's SamplingParams: {e}"
    return ""


def _names_from_vllm() -> Dict[str, Any]:
    vllm = _import_vllm()
    return {"engine": sorted(f.name for f in dataclasses.fields(vllm.EngineArgs)),
            "sampling": sorted(vllm.SamplingParams.__struct_fields__),
            "engine_types": _engine_types(vllm.EngineArgs)}


def _engine_types(engine_args) -> Dict[str, list]:
    """Each EngineArgs field declared with only bool/int/float/str/None or string Literals: what it accepts."""
    import vllm.engine.arg_utils as module

    found = {}
    for f in dataclasses.fields(engine_args):
        try:
            declared = eval(f.type, vars(module)) if isinstance(f.type, str) else f.type  # noqa: S307 - vLLM's own
        except Exception:  # noqa: BLE001 - a type we cannot evaluate is not checked
            continue
        union = typing.get_origin(declared) in (typing.Union, types.UnionType)
        accepted = [_simple(member) for member in (typing.get_args(declared) if union else (declared,))]
        if accepted and all(kind is not None for kind in accepted):
            found[f.name] = accepted
    return found


def _simple(member):
    if member in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[member]
    choices = typing.get_args(member)
    if typing.get_origin(member) is typing.Literal and all(isinstance(c, str) for c in choices):
        return {"choices": list(choices)}
    return None


def _import_vllm():
    import vllm
    from vllm import EngineArgs, SamplingParams  # noqa: F401 - both are needed by the callers

    return vllm


def _in_child(*argv: str) -> Dict[str, Any]:
    """Ask a child process that imports vLLM (see the module's docstring); its answer is its last line of output."""
    proc = subprocess.run([sys.executable, "-m", "runner.vllm_names", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"vLLM cannot be imported here ({why}): install vllm where the job is launched")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child(argv: List[str]) -> Dict[str, Any]:
    if argv[0] == "names":
        return _names_from_vllm()
    return {"problem": _build_sampling(json.loads(argv[1]))}


def _cached(folder: str, key: str, compute) -> Dict[str, Any]:
    """compute() once per installed vLLM (and key), then read back from the cache."""
    cache = _cache_file(folder, key)
    if cache is not None and cache.is_file():
        return json.loads(cache.read_text())
    value = compute()
    if cache is not None:  # concurrent launches read a whole entry or none
        atomic.write_json(cache, value)
    return value


def _cache_file(folder: str, key: str) -> Optional[Path]:
    """The cache entry of the installed vLLM's sources (and key); None when they cannot be read (no cache)."""
    spec = importlib.util.find_spec("vllm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(list(spec.submodule_search_locations)[0])
    digest = hashlib.sha256(_CACHE_FORMAT)
    for name in _DEFINING_FILES:
        try:
            digest.update((package / name).read_bytes())
        except OSError:
            return None
    name = digest.hexdigest()[:16]
    if key:
        name += "-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(os.environ.get("RUNNER_CACHE_DIR") or Path.home() / ".cache" / "runner")
    return root / folder / f"{name}.json"


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1:])))
