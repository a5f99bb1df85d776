"""`vllm serve --config`: the engine arguments reach the server through the YAML file kept beside its log, and a
value vLLM refuses ends the host at once with one line that says why."""

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from helpers.cli import ROOT, run_runner
from helpers.inputs import write_inputs
from helpers.processes import run_processes, tagged_env, wait_for

from runner.server import VllmServer, failure_reason, serve_config, write_serve_config

MODEL = str(Path.home() / ".cache/runner/models/SmolLM2-135M-Instruct")
# conf/cluster/local_cpu.yaml's engine arguments and environment
CPU_ENGINE = {"enforce_eager": True, "distributed_executor_backend": "uni", "dtype": "bfloat16"}
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}

# vLLM's own parser of `python -m vllm.entrypoints.openai.api_server` reads the file the runner wrote
PARSE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
keys, args = sys.stdin.read().split(), make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])
print(json.dumps({key: getattr(args, key) for key in keys}, default=str))
"""


def _parsed_by_vllm(argv, keys):
    proc = subprocess.run([sys.executable, "-c", PARSE, *argv], input=" ".join(keys), capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_vllm_reads_the_written_file_as_the_runner_means_it(tmp_path):
    """Underscored keys, a false boolean (dropped by vLLM unless dashed), a dict, a None (vLLM's default), the
    server's own settings winning over the engine's, and mode.serve_args winning over the file."""
    engine = {"enable_prefix_caching": False, "enforce_eager": True, "max_model_len": 2048, "seed": None,
              "override_generation_config": {"temperature": 0.5}, "served_model_name": "not-this"}
    own = {"model": "/models/x", "served_model_name": "smollm2_135m", "host": "127.0.0.1", "port": 8123}
    path = tmp_path / "vllm-serve.yaml"
    write_serve_config(path, serve_config(engine, own), ["--max-model-len", "512"])
    written = yaml.safe_load(path.read_text())
    assert "seed" not in written and all("_" not in key for key in written)
    got = _parsed_by_vllm(["--config", str(path), "--max-model-len", "512"],
                          ["enable_prefix_caching", "enforce_eager", "max_model_len", "seed", "model", "port",
                           "override_generation_config", "served_model_name", "host"])
    assert got == {"enable_prefix_caching": False, "enforce_eager": True, "max_model_len": 512, "seed": 0,
                   "override_generation_config": {"temperature": 0.5}, "served_model_name": ["smollm2_135m"],
                   "model": "/models/x", "host": "127.0.0.1", "port": 8123}


@pytest.mark.parametrize("log, reason", [
    ("usage: x\n   [model_tag]\napi_server.py: error: argument --dtype: invalid choice: 'f99'\n",
     "api_server.py: error: argument --dtype: invalid choice: 'f99'"),
    ("Traceback\n  File \"a.py\", line 1\n    x()\npydantic_core.ValidationError: 1 validation error for ModelConfig\n"
     "  Value error, max_model_len (9) is too big [type=value_error]\n    For further information visit https://x\n",
     "pydantic_core.ValidationError: 1 validation error for ModelConfig: Value error, max_model_len (9) is too big "
     "[type=value_error]"),
    ("(EngineCore_DP0 pid=5) ERROR 12-01 10:58:20 [core.py:12] ValueError: no CUDA\n"
     "(APIServer pid=4) RuntimeError: Engine core initialization failed. See root cause above.\n",
     "ValueError: no CUDA"),
    ("", "no output"),
])
def test_failure_reason_is_the_one_line_that_says_why(log, reason):
    assert failure_reason(log) == reason


@pytest.mark.engine
def test_a_value_only_in_the_yaml_reaches_the_server(tmp_path):
    """max_model_len=777 and the served name are nowhere on the command line: /v1/models reports them."""
    tag = uuid.uuid4().hex
    server = VllmServer(MODEL, "smol-served", 0, {**CPU_ENGINE, "max_model_len": 777}, [],
                        tmp_path / "vllm-serve.log", {**CPU_ENV, **tagged_env(tag)})
    try:
        server.start(600)
        text = (tmp_path / "vllm-serve.yaml").read_text()
        written = yaml.safe_load(text)
        request = urllib.request.Request(f"{server.url}/v1/models", headers=server.auth)
        with urllib.request.urlopen(request, timeout=10) as response:
            models = json.load(response)["data"]
    finally:
        server.stop(grace_s=10)
    assert "--max-model-len" not in server.argv and "777" not in server.argv
    assert [(m["id"], m["max_model_len"]) for m in models] == [("smol-served", 777)]
    assert written["port"] == server.port and written["max-model-len"] == 777 and written["model"] == MODEL
    assert server.api_key not in text  # the key stays in the environment: the file is kept in the run's logs
    assert wait_for(lambda: not run_processes(tag), 10)


@pytest.mark.engine
def test_a_value_vllm_refuses_ends_the_run_at_once_with_one_line(tmp_path):
    """max_model_len over SmolLM2's 8192 passes the launch's checks, and vLLM refuses it: the run fails in
    seconds (not after mode.start_timeout_s), the host's last log line names the value, and the file vLLM was
    given is kept in the run's logs beside the server's log."""
    inputs = write_inputs(tmp_path / "in", {"a.txt": ["Say hello."]})
    run, tag = tmp_path / "run", uuid.uuid4().hex
    started = time.monotonic()
    proc = run_runner(["mode=server_per_node", f"input.path={inputs}", "mode.port=0",
                       "mode.start_timeout_s=600", "model.engine.max_model_len=999999", f"hydra.run.dir={run}"],
                      env=tagged_env(tag))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert time.monotonic() - started < 300
    last = [line for line in (run / "logs" / "run0.log").read_text().splitlines() if line.strip()][-1]
    assert "ERROR" in last and "999999" in last
    assert yaml.safe_load((run / "logs" / "host0" / "vllm-serve.yaml").read_text())["max-model-len"] == 999999
    assert (run / "logs" / "host0" / "vllm-serve.log").stat().st_size > 0
    assert not (run / "out" / "a.txt.jsonl").exists()
    assert wait_for(lambda: not run_processes(tag), 10)
