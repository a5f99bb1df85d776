"""The reference test of the OpenAI batch format: one 20-line batch file (chats, greedy, max_tokens varied per
request) through vLLM's own `run-batch` and through the runner in both modes gives the same custom_ids and the
same answers line for line (content, finish_reason, token counts), in output lines with the same keys at every
level (ids and timestamps differ). One run-batch and one runner job per mode."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import ROOT, run_runner
from helpers.inputs import read_jsonl

pytestmark = pytest.mark.engine

MODEL = "smollm2_135m_fp32"  # run-batch below computes in float32 too
QUESTIONS = ["What is the capital of France?", "Name a primary color.", "What is 2 plus 2?", "Say hello in Spanish.",
             "What is the largest planet?", "Who wrote Hamlet?", "What is water made of?",
             "Name a fruit that is yellow.", "What is the boiling point of water in Celsius?",
             "How many legs does a spider have?"]


def _batch(path):
    with open(path, "w") as f:
        for i in range(20):
            question = QUESTIONS[i % 10] + ("" if i < 10 else " Answer briefly.")
            body = {"model": MODEL, "messages": [{"role": "user", "content": question}],
                    "max_tokens": [4, 8, 12, 16, 24][i % 5], "temperature": 0}
            f.write(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": body}) + "\n")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """(the batch file, in a folder of its own as per_tile's 0.in; vLLM run-batch's output lines)."""
    from omegaconf import OmegaConf

    from runner.models import build_smollm2

    folder = tmp_path_factory.mktemp("batch")
    (folder / "in").mkdir()
    _batch(folder / "in" / "0.in")
    model = str(build_smollm2(Path(OmegaConf.load(ROOT / "conf/model/smollm2_135m.yaml").path)))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(folder / "in" / "0.in"),
            "-o", str(folder / "reference.jsonl"), "--model", model, "--served-model-name", MODEL,
            "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
            "--distributed-executor-backend", "uni"]
    with open(folder / "run_batch.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert proc.wait(timeout=600) == 0, (folder / "run_batch.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return folder / "in", read_jsonl(folder / "reference.jsonl")


def _keys(value):
    """The keys at every level (list items by position), with no values."""
    if isinstance(value, dict):
        return {key: _keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_keys(item) for item in value]
    return None


def _answer(line):
    body = line["response"]["body"]
    choice, usage = body["choices"][0], body["usage"]
    return (line["custom_id"], line["response"]["status_code"], line["error"], body["object"], body["model"],
            choice["message"]["content"], choice["finish_reason"], usage["prompt_tokens"],
            usage["completion_tokens"], usage["total_tokens"])


@pytest.mark.parametrize("mode", [[], ["mode=server_per_node", "mode.port=0"]], ids=["per_tile", "server_per_node"])
def test_the_runner_writes_what_vllm_run_batch_writes(batch, tmp_path, mode):
    inputs, reference = batch
    run = tmp_path / "run"
    proc = run_runner([*mode, "input=openai_batch", f"input.path={inputs}", f"model={MODEL}",
                       "+engine.max_model_len=1024", "cluster.ranks_per_node=1", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = read_jsonl(run / "out" / "0.in.jsonl")  # one output per input file in both modes
    assert [line["custom_id"] for line in ours] == [f"req-{i}" for i in range(20)]
    assert [_answer(line) for line in ours] == [_answer(line) for line in reference]
    assert [_keys(line) for line in ours] == [_keys(line) for line in reference]
    assert len({line["id"] for line in ours}) == 20
    assert {line["response"]["body"]["choices"][0]["finish_reason"] for line in ours} == {"stop", "length"}
