"""The benchmark (benchmarks/bench_vs_raw.py) on this CPU: same prompts and same tokens in every leg, and a result
file written leg by leg. It measures nothing here; the GPU numbers are in benchmarks/results/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from helpers.cli import ROOT
from runner.models import build_smollm2

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_vs_raw  # noqa: E402

CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
CPU_ENGINE = json.dumps({"enforce_eager": True, "distributed_executor_backend": "uni"})


def run_bench(model_dir: str, tmp_path: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """The benchmark on this CPU, writing tmp_path/result.json and its legs' folders under tmp_path/work."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "bench_vs_raw.py"), "--model-dir", model_dir, *args,
            "--out", str(tmp_path / "result.json"), "--work-dir", str(tmp_path / "work")]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **CPU_ENV})


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(build_smollm2(Path(os.path.expanduser("~/.cache/runner/models/SmolLM2-135M-Instruct"))))


def test_prompts_have_exactly_the_asked_length_and_repeat_with_the_seed(model_dir):
    prompts = bench_vs_raw.make_prompts(model_dir, 300, 64, seed=7)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert len(prompts) == 300
    assert {len(ids) for ids in tok(prompts, add_special_tokens=False).input_ids} == {64}
    assert all("\n" not in p for p in prompts)
    assert bench_vs_raw.make_prompts(model_dir, 300, 64, seed=7) == prompts


def test_rounds_mirror_the_order_so_the_first_mode_is_always_next_to_raw():
    modes = ["per_tile", "server_per_node"]
    assert bench_vs_raw.leg_order(0, modes) == ["raw", "per_tile", "server_per_node"]
    assert bench_vs_raw.leg_order(1, modes) == ["server_per_node", "per_tile", "raw"]
    assert bench_vs_raw.leg_order(3, ["per_tile"]) == ["per_tile", "raw"]


@pytest.mark.engine
def test_raw_and_per_tile_legs_generate_the_same_tokens_and_take_turns_to_go_first(model_dir, tmp_path):
    proc = run_bench(model_dir, tmp_path, "--prompts", "6", "--input-len", "16", "--output-len", "4", "--rounds", "2",
                     "--modes", "per_tile", "--cluster", "local_cpu", "--seed", "11", "--engine", CPU_ENGINE,
                     "--override", "mode.max_in_flight=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    order = [(leg["round"], leg["leg"]) for leg in result["legs"]]
    assert order == [(0, "raw"), (0, "per_tile"), (1, "per_tile"), (1, "raw")], result["legs"]
    assert {leg["output_tokens"] for leg in result["legs"]} == {6 * 4}
    # the ratios are those of the legs written beside them: each runner leg over its own round's raw leg
    rate = {(leg["round"], leg["leg"]): leg["output_tokens_per_s"] for leg in result["legs"]}
    per_round = [round(rate[(r, "per_tile")] / rate[(r, "raw")], 4) for r in (0, 1)]
    assert result["ratios"]["per_tile"]["per_round"] == per_round
    assert result["ratios"]["per_tile"]["mean"] == round(sum(per_round) / 2, 4)
    raw = [rate[(r, "raw")] for r in (0, 1)]
    assert result["ratios"]["raw_spread"] == round(max(raw) / min(raw), 4)
    assert all(0 < leg["record_s"] < leg["generate_s"] for leg in result["legs"] if leg["leg"] == "per_tile")
    jobs = [OmegaConf.load(f) for f in (tmp_path / "work").glob("per_tile-*/job.yaml")]
    assert [job.mode.max_in_flight for job in jobs] == [3, 3]  # --override reached both runner legs
    assert result["commands"] and "--modes per_tile" in result["commands"][0]


def test_until_eos_refuses_dummy_weights_before_starting_anything(model_dir, tmp_path):
    proc = run_bench(model_dir, tmp_path, "--dummy", "--until-eos", timeout=120)
    assert proc.returncode != 0 and "--until-eos needs real weights" in proc.stderr
    assert not (tmp_path / "result.json").exists()


@pytest.mark.engine
def test_until_eos_sends_chat_turns_whose_answers_end_at_lengths_of_their_own(model_dir, tmp_path):
    proc = run_bench(model_dir, tmp_path, "--prompts", "8", "--input-len", "32", "--output-len", "48", "--rounds", "1",
                     "--modes", "per_tile", "--until-eos", "--cluster", "local_cpu", "--engine", CPU_ENGINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    legs = json.loads((tmp_path / "result.json").read_text())["legs"]
    assert [leg["leg"] for leg in legs] == ["raw", "per_tile"] and all("error" not in leg for leg in legs), legs
    tokens = [leg["output_tokens"] for leg in legs]
    assert tokens[0] == tokens[1] and 8 <= tokens[0] < 8 * 48, tokens  # same greedy answers; some ended at EOS
    job = OmegaConf.load(next((tmp_path / "work").glob("per_tile-*/job.yaml")))
    assert job.mode.prompt_style == "chat" and job.sampling.ignore_eos is False
