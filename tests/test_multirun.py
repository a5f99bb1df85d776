"""A Hydra multirun sweep over models runs each job and keeps separate output folders."""

import pytest

from helpers.cli import run_runner
from helpers.inputs import write_inputs

pytestmark = pytest.mark.engine


def test_sweep_over_two_models(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["What is the capital of France?"]})
    proc = run_runner(["model=smollm2_135m,smollm2_135m_fp32", "cluster.ranks_per_node=1", "output.format=text",
                       f"input.path={inputs}", "sampling.max_tokens=16", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                      multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = sorted((tmp_path / "sweep").glob("*/out/0.in.out"))  # per_tile's joined output in the text format
    assert [p.parent.parent.name for p in outs] == [
        "cluster.ranks_per_node=1,model=smollm2_135m,output.format=text,sampling.max_tokens=16",
        "cluster.ranks_per_node=1,model=smollm2_135m_fp32,output.format=text,sampling.max_tokens=16",
    ]
    for out in outs:
        (line,) = out.read_text().splitlines()
        assert line.startswith("Prompt: 'What is the capital of France?', Generated text: ") and "Paris" in line
