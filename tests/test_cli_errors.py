"""Bad input gives a clear message and a non-zero exit, before any rank starts."""

import pytest

from helpers.cli import run_runner
from helpers.inputs import write_inputs


def test_missing_rank_input_names_the_file(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    proc = run_runner([f"input.path={inputs}", "nodes=2", "mode.assign=by_rank", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert "2 input file(s) cannot be used" in proc.stderr
    assert f"{inputs}/2.in: missing" in proc.stderr and f"{inputs}/3.in: missing" in proc.stderr
    assert not list((tmp_path / "run" / "logs").glob("*.log"))


def test_unknown_model_path(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    proc = run_runner([f"input.path={inputs}", "model.source=path", "model.path=/no/such/model",
                       f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert "model.path=/no/such/model has no config.json" in proc.stderr


def test_unknown_config_key():
    proc = run_runner(["mode.chunk_sise=10"])
    assert proc.returncode != 0
    assert "Key 'chunk_sise' not in 'PerTileConfig'" in proc.stderr


def test_unknown_sampling_argument_is_named(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    proc = run_runner([f"input.path={inputs}", "+sampling.temprature=0.5", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert "sampling has keys vLLM does not know: ['temprature']" in proc.stderr


def test_missing_input_folder(tmp_path):
    proc = run_runner([f"input.path={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert "no such file or folder" in proc.stderr
    by_rank = run_runner([f"input.path={tmp_path / 'nope'}", "mode.assign=by_rank", f"hydra.run.dir={tmp_path / 'run'}"])
    assert by_rank.returncode == 2 and "is not a folder" in by_rank.stderr


def _refused(tmp_path, *overrides, inputs=None):
    """Run a launch that must be refused: exit 2, one ConfigError line, no traceback, no run directory left."""
    inputs = inputs or write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    run = tmp_path / "run"
    proc = run_runner([f"input.path={inputs}", f"hydra.run.dir={run}", *overrides])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "ConfigError: " in proc.stderr
    assert not run.exists(), sorted(p.name for p in run.iterdir())
    return [line for line in proc.stderr.splitlines() if "ConfigError: " in line][0]


@pytest.mark.parametrize("overrides, key", [
    (["mode=server_per_node", "mode.stall_s=-5"], "mode.stall_s=-5.0"),  # a server hung after one quiet health check
    (["nodes=0"], "nodes=0"),
])
def test_a_number_out_of_its_range_is_refused_before_anything_starts(tmp_path, overrides, key):
    assert f"{key} is out of range" in _refused(tmp_path, *overrides)


def test_a_local_job_of_more_engines_than_the_machine_should_hold_is_refused(tmp_path):
    """nodes=33 meant for a cluster: 66 engines (2 per local node) would start on this machine."""
    assert "launcher=local would start 66 vLLM engines" in _refused(tmp_path, "nodes=33")
    inputs = write_inputs(tmp_path / "in2", {"0.in": ["a"]})
    allowed = run_runner([f"input.path={inputs}", "nodes=33", "launcher.max_engines=66", "plan=true",
                          f"hydra.run.dir={tmp_path / 'run2'}"])
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_a_scheduler_command_missing_here_is_named_before_a_run_directory_is_made(tmp_path):
    message = _refused(tmp_path, "launcher=pbs", "launcher.queue=q", "launcher.account=a", "launcher.qsub=/no/qsub")
    assert "launcher.qsub=/no/qsub is not found here" in message
    inputs, run = write_inputs(tmp_path / "in2", {"0.in": ["a"]}), tmp_path / "run2"
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = run_runner(["launcher=slurm", f"input.path={inputs}", f"hydra.run.dir={run}"], env={"PATH": str(empty)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "launcher=slurm needs srun and sbatch, not on PATH here" in proc.stderr and not run.exists()
    for launcher in (["launcher=slurm"], ["launcher=pbs", "launcher.queue=q", "launcher.account=a"]):
        plan = run_runner([*launcher, f"input.path={inputs}", "plan=true", f"hydra.run.dir={run}"],
                          env={"PATH": str(empty)})
        assert plan.returncode == 0 and not run.exists(), plan.stderr[-2000:]  # a plan starts nothing
    dry = run_runner(["launcher=slurm", f"input.path={inputs}", "dry_run=true", f"hydra.run.dir={run}"],
                     env={"PATH": str(empty)})
    assert "launcher=slurm needs srun, not on PATH here" in dry.stderr and not run.exists()


def test_a_sampling_value_vllm_refuses_is_named_at_compose_time(tmp_path):
    message = _refused(tmp_path, "sampling.max_tokens=-5")
    assert "sampling.max_tokens is refused by vLLM's SamplingParams: max_tokens must be at least 1" in message


def test_an_engine_value_of_the_wrong_type_is_named(tmp_path):
    message = _refused(tmp_path, "model.engine.dtype=bf16")
    assert "model.engine.dtype='bf16' is not one of" in message and "'bfloat16'" in message


def test_pbs_without_queue_and_account_names_both_keys(tmp_path):
    message = _refused(tmp_path, "launcher=pbs")
    assert "launcher.account, launcher.queue must be set" in message
    assert "add launcher.account=... launcher.queue=..." in message


SERVER = ["mode=server_per_node", "input=tsv", "input.columns=[genome_id,organism,gene_id,description]"]


def test_an_id_column_that_is_a_record_key_is_refused(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"a.tsv": ["G1\tE. coli\tdnaA\tinitiator"]})
    message = _refused(tmp_path, *SERVER, "input.id_fields=[genome_id,line]", inputs=inputs)
    assert "names record keys ['line']" in message


def test_an_id_column_that_is_no_column_is_refused(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"a.tsv": ["G1\tE. coli\tdnaA\tinitiator"]})
    message = _refused(tmp_path, *SERVER, "input.id_fields=[genome_id,genome]", inputs=inputs)
    assert "names ['genome'], which are not fields of input.columns" in message and "'gene_id'" in message


LONG = " ".join(["word"] * 3000)  # about 3000 tokens, over SmolLM2's max_model_len of 2048


def test_lines_too_long_for_the_model_refuse_the_launch_by_default(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a", LONG, "b"], "1.in": ["c", "", LONG]})
    message = _refused(tmp_path, inputs=inputs)
    assert "2 of 5 input lines do not fit" in message and "max_model_len=2048" in message
    assert "(0.in:2, 1.in:3; longest prompt" in message and "mode.on_too_long=record" in message


def test_server_lines_too_long_after_the_template_refuse_the_launch(tmp_path):
    """The prompt that counts is the template's, over the columns: a short description fits, a long one not."""
    inputs = write_inputs(tmp_path / "in", {"a.tsv": ["G1\tE. coli\tdnaA\tinitiator", f"G1\tE. coli\trecA\t{LONG}"]})
    message = _refused(tmp_path, *SERVER, inputs=inputs)
    assert "1 of 2 input lines do not fit" in message and "(a.tsv:2;" in message


@pytest.mark.parametrize("sweep", [False, True])
def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path, sweep):
    """A run directory below a file (or anywhere this user cannot write): one line naming the key, exit 2."""
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"]})
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    proc = run_runner([f"input.path={inputs}", f"{key}={blocker / 'run'}", "plan=true"], multirun=sweep)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith(f"ConfigError: {key}=")]

