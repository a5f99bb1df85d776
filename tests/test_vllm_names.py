"""The launcher's check of engine/sampling names: the first launch reads them from vLLM in a child process (the
launcher's own environment, which its ranks inherit, stays as it was), later ones read the cache."""

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
from runner import vllm_names
import os
before = dict(os.environ)
names = vllm_names.known_names()
print(json.dumps({"imported_vllm": "vllm" in sys.modules, "env_changed": dict(os.environ) != before,
                  "engine": sorted(names["engine"]),
                  "sampling": sorted(names["sampling"])}))
"""


def _probe(cache_dir) -> dict:
    env = {**os.environ, "RUNNER_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def test_names_come_from_vllm_once_then_from_the_cache(tmp_path):
    first = _probe(tmp_path)
    assert not first["imported_vllm"] and not first["env_changed"]
    assert {"max_model_len", "enforce_eager", "dtype"} <= set(first["engine"])
    assert {"temperature", "max_tokens", "ignore_eos"} <= set(first["sampling"])
    assert len(list((tmp_path / "vllm-names").glob("*.json"))) == 1

    second = _probe(tmp_path)
    assert not second["imported_vllm"]
    assert second["engine"] == first["engine"] and second["sampling"] == first["sampling"]


SAMPLING_PROBE = """
import json, os, sys
from runner import vllm_names
before = dict(os.environ)
problems = [vllm_names.sampling_problem({"max_tokens": -5}), vllm_names.sampling_problem({"max_tokens": 8})]
print(json.dumps({"imported_vllm": "vllm" in sys.modules, "env_changed": dict(os.environ) != before,
                  "problems": problems}))
"""


def test_sampling_values_are_checked_by_vllm_once_per_dict_then_from_the_cache(tmp_path):
    env = {**os.environ, "RUNNER_CACHE_DIR": str(tmp_path)}

    def probe():
        proc = subprocess.run([sys.executable, "-c", SAMPLING_PROBE], env=env, capture_output=True, text=True,
                              check=True)
        found = json.loads(proc.stdout.splitlines()[-1])
        assert not found["imported_vllm"] and not found["env_changed"]
        return found["problems"]

    refused, accepted = probe()
    assert refused.startswith("sampling.max_tokens is refused by vLLM's SamplingParams: max_tokens must be at least 1")
    assert accepted == ""
    entries = list((tmp_path / "vllm-sampling").glob("*.json"))
    assert len(entries) == 2
    for entry in entries:  # mark the cached answers: the second launch must read them, not ask vLLM again
        entry.write_text(entry.read_text().replace("must be at least 1", "(cached)"))
    assert probe()[0].endswith("(cached), got -5. (parameter=max_tokens, value=-5)")
