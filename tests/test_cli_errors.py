"""Bad input gives a clear message and a non-zero exit, before any rank starts."""

from conftest import run_runner, write_inputs


def test_missing_rank_input_names_the_file(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    proc = run_runner([f"mode.input_dir={inputs}", "nodes=2", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert "2 input file(s) cannot be used" in proc.stderr
    assert f"{inputs}/2.in: missing" in proc.stderr and f"{inputs}/3.in: missing" in proc.stderr
    assert not list((tmp_path / "run" / "logs").glob("*.log"))


def test_unknown_model_path(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    proc = run_runner([f"mode.input_dir={inputs}", "model.source=path", "model.path=/no/such/model",
                       f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert "model.path=/no/such/model has no config.json" in proc.stderr


def test_unknown_config_key():
    proc = run_runner(["mode.chunk_sise=10"])
    assert proc.returncode != 0
    assert "Key 'chunk_sise' not in 'PerTileMode'" in proc.stderr


def test_unknown_sampling_argument_is_named(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    proc = run_runner([f"mode.input_dir={inputs}", "+sampling.temprature=0.5", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert "sampling has keys vLLM does not know: ['temprature']" in proc.stderr


def test_missing_input_folder(tmp_path):
    proc = run_runner([f"mode.input_dir={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert "is not a folder" in proc.stderr
