"""launcher=pbs: the rendered script (golden file), qsub at the subprocess boundary, and the script run for
real under a PBS-shaped environment with MPICH's mpiexec."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.cli import ROOT, run_runner
from helpers.inputs import read_jsonl, write_inputs
from launchers.pbs import PbsLauncher, parse_job_id, render
from runner.errors import SubmissionError

GOLDEN = Path(__file__).parent / "golden" / "pbs_script.sh"


def _cfg(run_root: str) -> OmegaConf:
    return OmegaConf.create({
        "run_name": "genes 'v2'", "nodes": 4, "staging": {"name": "mpi_bcast"},
        "mode": {"name": "per_tile"}, "cluster": {"ranks_per_node": 12},
        "launcher": {"queue": "debug scaling", "account": "my'proj", "walltime_min": 90, "filesystems": "home:flare",
                     "place": "scatter", "mpiexec": "mpiexec", "mpiexec_args": ["--cpu-bind", "list:1-8"],
                     "setup": ["module load frameworks"]},
    })


def test_rendered_script_matches_golden_with_spaces_and_quotes_in_paths():
    job_file = Path("/lus/my project/run 'a'/job.yaml")
    text = render(_cfg(str(job_file.parent)), job_file, python="/opt/venv x/bin/python")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def _fake_qsub(tmp_path, body: str) -> str:
    qsub = tmp_path / "qsub"
    qsub.write_text(f"#!/bin/bash\necho \"$@\" > {tmp_path}/qsub.args\n{body}\n")
    qsub.chmod(qsub.stat().st_mode | stat.S_IEXEC)
    return str(qsub)


def test_submit_parses_the_job_id(tmp_path):
    qsub = _fake_qsub(tmp_path, "echo 4242.aurora-pbs-0001.hostmgmt.cm.aurora.alcf.anl.gov")
    assert PbsLauncher.submit(qsub, tmp_path / "job.pbs") == "4242.aurora-pbs-0001.hostmgmt.cm.aurora.alcf.anl.gov"
    assert (tmp_path / "qsub.args").read_text().strip() == str(tmp_path / "job.pbs")


def test_submit_without_job_id_quotes_qsub(tmp_path):
    qsub = _fake_qsub(tmp_path, "echo 'qsub: maintenance window'")
    with pytest.raises(SubmissionError, match="qsub: maintenance window"):
        PbsLauncher.submit(qsub, tmp_path / "job.pbs")


def test_refused_submission_reports_qsub_stderr(tmp_path):
    qsub = _fake_qsub(tmp_path, "echo 'qsub: Unknown queue' >&2; exit 177")
    with pytest.raises(SubmissionError, match=r"exit 177\): qsub: Unknown queue"):
        PbsLauncher.submit(qsub, tmp_path / "job.pbs")


def test_job_id_forms():
    assert parse_job_id("123.server\n") == "123.server"
    assert parse_job_id("77[].pbs01\n") == "77[].pbs01"


@pytest.mark.engine
def test_rendered_script_runs_four_ranks_under_pbs_environment_with_mpiexec(tmp_path):
    lines = {f"{r}.in": [f"What is {r} + {r}?", f"Name the number {r}."] for r in range(4)}
    inputs = write_inputs(tmp_path / "in", lines)
    run = tmp_path / "run dir"
    proc = run_runner(["launcher=pbs", "launcher.queue=debug", "launcher.account=proj", "dry_run=true",
                       "cluster.accelerator=intel", "cluster.gpus_per_node=2", "cluster.tiles_per_gpu=2",
                       "cluster.ranks_per_node=4", f"mode.input_dir={inputs}", "sampling.max_tokens=8",
                       f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = run / "job.pbs"
    assert "mpiexec -n 4 -ppn 4" in script.read_text()
    (tmp_path / "nodefile").write_text("localhost\n")
    env = {**os.environ, "PBS_NODEFILE": str(tmp_path / "nodefile"), "PBS_JOBID": "1.test-pbs"}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=900)
    log = (run / "logs" / "job.log").read_text()
    assert done.returncode == 0, log[-4000:]
    assert "runner: job 1.test-pbs on 1 node(s)" in log
    for rank in range(4):
        records = read_jsonl(run / "out" / f"{rank}.out")
        assert [r["prompt"] for r in records] == lines[f"{rank}.in"]
        stats = json.loads((run / "stats" / f"rank{rank}.json").read_text())
        assert stats["local_rank"] == rank
        assert stats["device"]["ZE_AFFINITY_MASK"] == f"{rank // 2}.{rank % 2}"
    assert json.loads((run / "summary.json").read_text())["prompts"] == 8
