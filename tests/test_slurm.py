"""launcher=slurm through submitit, against the one-node Slurm cluster that scripts/start_slurm.sh starts."""

import json
import re
import shutil
from pathlib import Path

import pytest

from helpers.cli import run_runner, start_runner
from helpers.inputs import read_jsonl, write_inputs
from helpers.launcher_suite import Job, LauncherSuite, lock_holder
from helpers.processes import run_processes


def test_dry_run_writes_the_sbatch_script_submitit_would_submit(tmp_path):
    inputs = write_inputs(tmp_path / "in", {f"{r}.in": ["x"] for r in range(8)})
    run = tmp_path / "run"
    proc = run_runner(["launcher=slurm", "dry_run=true", "nodes=2", "cluster=polaris", "launcher.partition=gpu",
                       "launcher.account=bio", "cluster.gpus_per_node=4", "launcher.walltime_min=30",
                       "staging=mpi_bcast", f"input.path={inputs}", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = (run / "job.sbatch").read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --partition=gpu",
                 "#SBATCH --account=bio", "#SBATCH --gpus-per-node=4", "#SBATCH --time=30"):
        assert line in script
    assert "--mpi=pmi2" in script
    assert not (run / "slurm_job_id").exists()


NO_SLURM = "needs Slurm: run the tests through scripts/test.sh" if shutil.which("sbatch") is None else ""


@pytest.mark.slurm
@pytest.mark.skipif(bool(NO_SLURM), reason=NO_SLURM)
def test_a_job_sbatch_refuses_is_one_line_and_leaves_the_run_free(tmp_path):
    """A wrong sbatch option (or partition, or account) was a submitit traceback."""
    inputs, run = write_inputs(tmp_path / "in", {"0.in": ["x"]}), tmp_path / "run"
    args = ["launcher=slurm", f"input.path={inputs}", f"hydra.run.dir={run}"]
    proc = run_runner([*args, "+launcher.additional_parameters.no_such_option=1"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "SubmissionError: sbatch refused the job: " in proc.stderr and "--no-such-option=1" in proc.stderr
    assert not (run / "slurm_job_id").exists() and lock_holder(run) is None
    again = run_runner([*args, "dry_run=true"])  # the run is not held by the refused launch
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slurm
class TestSlurmLauncher(LauncherSuite):
    """The job goes through submitit to the one-node Slurm cluster; `launcher.wait=true` keeps the CLI until it
    ends (and the CLI then releases the lock the job held)."""
    launcher = "slurm"
    script = "job.sbatch"
    run_overrides = ("launcher.walltime_min=20", "cluster.ranks_per_node=1")

    def skip_reason(self):
        return NO_SLURM

    def start(self, args, tmp, env):
        run = Path(next(a for a in args if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        process = start_runner([*args, "launcher.wait=true"], tmp / "launch.err", env)
        return Job(process, lambda: ("slurm", (run / "slurm_job_id").read_text().strip()))

    def job_runs(self, tag):
        """A Slurm task runs the worker inside submitit's own process."""
        return any("submitit.core._submit" in " ".join(argv) for argv in run_processes(tag).values())

    def nothing_submitted(self, tmp, run):
        return not (run / "slurm_job_id").exists() and not list((run / "slurm").glob("*_log.*"))

    @pytest.mark.engine
    def test_the_job_is_slurms_and_answers_sensibly(self, real_run):
        run = real_run.run
        job_id = (run / "slurm_job_id").read_text().strip()
        assert job_id.isdigit() and list((run / "slurm").glob(f"{job_id}_0_log.out"))
        assert "Paris" in read_jsonl(run / "out" / "0.out")[0]["response"]


@pytest.mark.engine
@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs Slurm: run the tests through scripts/test.sh")
def test_submitit_job_stages_the_model_by_mpi_broadcast_then_answers(tmp_path):
    """Two Slurm tasks: their staging children join one MPI world through Slurm's PMI (srun --mpi=pmi2), copy
    the model to the node-local folder, and both ranks then load it from there."""
    inputs = write_inputs(tmp_path / "in", {"0.in": ["What is the capital of France?"], "1.in": ["Say hello."]})
    run, target = tmp_path / "run", tmp_path / "node-local"
    proc = run_runner(["launcher=slurm", "launcher.wait=true", "launcher.walltime_min=20", "launcher.cpus_per_task=1",
                       "staging=mpi_bcast", f"staging.target_dir={target}", f"input.path={inputs}",
                       "mode.assign=by_rank",
                       "sampling.max_tokens=8", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    staged = list(target.iterdir())
    assert len(staged) == 1 and (staged[0] / "config.json").is_file() and (staged[0] / "model.safetensors").is_file()
    assert all(len(read_jsonl(run / "out" / f"{r}.out")) == 1 for r in (0, 1))
    report = json.loads((run / "staging.json").read_text())
    assert report["nodes"] == 1 and report["gib_per_s"] > 0
    task_logs = "".join(p.read_text() for p in (run / "slurm").glob("*_log.*"))
    loaded = {m.group(1) for m in re.finditer(rf"rank (\d)/2 .* model {re.escape(str(staged[0]))}", task_logs)}
    assert loaded == {"0", "1"}  # both ranks loaded the staged copy
