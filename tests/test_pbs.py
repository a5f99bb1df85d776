"""launcher=pbs: the rendered script (golden file), qsub at the subprocess boundary, and the script run for
real under a PBS-shaped environment with MPICH's mpiexec."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.cli import run_runner
from helpers.launcher_suite import Job, LauncherSuite
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


JOB_ID = "4242.fake-pbs"


class TestPbsLauncher(LauncherSuite):
    """qsub and qstat are faked (qsub hands out JOB_ID, qstat lists it); the submitted script then runs for real
    under a PBS-shaped environment (PBS_NODEFILE, PBS_JOBID) with MPICH's mpiexec, as the job would."""
    launcher = "pbs"
    script = "job.pbs"
    inputs = {f"{r}.in": [f"What is {r} + {r}?", f"Name the number {r}."] for r in range(4)}
    run_overrides = ("cluster.accelerator=intel", "cluster.gpus_per_node=2", "cluster.tiles_per_gpu=2",
                     "cluster.ranks_per_node=4")

    def launcher_args(self, tmp):
        return ["launcher.queue=debug", "launcher.account=proj", f"launcher.qsub={tmp / 'bin' / 'qsub'}"]

    def env(self, tmp):
        bin_dir = tmp / "bin"
        if not bin_dir.is_dir():
            bin_dir.mkdir()
            _fake(bin_dir / "qsub", f'echo "$@" > {tmp}/qsub.args; echo {JOB_ID}')
            _fake(bin_dir / "qstat", f'echo "{JOB_ID} runner-x user 0 R debug"')
        return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def start(self, args, tmp, env):
        submitted = run_runner(args, env=env)
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        assert (tmp / "qsub.args").read_text().split() == [str(_run_of(args) / "job.pbs")]
        (tmp / "nodefile").write_text("localhost\n")
        job_env = {**os.environ, **env, "PBS_NODEFILE": str(tmp / "nodefile"), "PBS_JOBID": JOB_ID}
        process = subprocess.Popen(["bash", str(_run_of(args) / "job.pbs")], env=job_env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        return Job(process, lambda: ("pbs", JOB_ID))

    def nothing_submitted(self, tmp, run):
        return not (tmp / "qsub.args").exists() and not (run / "pbs_job_id").exists()

    @pytest.mark.engine
    def test_mpiexec_places_four_ranks_each_on_its_own_tile(self, real_run):
        run = real_run.run
        assert "mpiexec -n 4 -ppn 4" in (run / "job.pbs").read_text()
        assert (run / "pbs_job_id").read_text().strip() == JOB_ID
        for rank in range(4):
            stats = json.loads((run / "stats" / f"rank{rank}.json").read_text())
            assert stats["local_rank"] == rank
            assert stats["device"]["ZE_AFFINITY_MASK"] == f"{rank // 2}.{rank % 2}"


def _fake(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_of(args) -> Path:
    return Path(next(a for a in args if a.startswith("hydra.run.dir=")).split("=", 1)[1])


def test_a_rerun_pbs_job_keeps_its_job_id_but_each_start_is_its_own_attempt(tmp_path):
    """qrerun (or a node failure) starts a PBS job again under the same PBS_JOBID: its first start's work-queue
    claims, Ray addresses and stats must not count as this start's. The dry-run script run twice for real (MPICH's
    mpiexec, a PBS-shaped environment, same job id): every rank and step of one start shares one attempt, the two
    starts differ. No engine: every line is too long for the model, so each rank records its ERRORs at once."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("".join(" ".join([f"w{i}"] * 80) + "\n" for i in range(4)))
    run = tmp_path / "run"
    args = [f"input.path={tmp_path / 'in'}", f"hydra.run.dir={run}", "launcher=pbs", "launcher.queue=debug",
            "launcher.account=proj", "dry_run=true", "cluster.ranks_per_node=2", "+engine.max_model_len=64",
            "sampling.max_tokens=4", "mode.on_too_long=record"]
    assert run_runner(args).returncode == 0
    (tmp_path / "nodefile").write_text("localhost\n")
    env = {**{k: v for k, v in os.environ.items() if k != "RUNNER_ATTEMPT"}, "PBS_NODEFILE": str(tmp_path / "nodefile"),
           "PBS_JOBID": JOB_ID}
    attempts = []
    for start in range(2):
        subprocess.run(["bash", str(run / "job.pbs")], env=env, check=True, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ranks = {json.loads((run / "stats" / f"rank{r}.json").read_text())["attempt"] for r in range(2)}
        assert len(ranks) == 1, f"start {start}: the ranks of one start disagree on their attempt: {ranks}"
        attempts.append(ranks.pop())
    assert attempts[0] != attempts[1] and all(a.startswith(JOB_ID) for a in attempts), attempts
