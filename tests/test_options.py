"""Each group option is a schema subclass whose `_target_` class does its work; option YAMLs hold only what they
change; job.yaml holds the engine arguments as vLLM receives them."""

import re

import pytest
import yaml
from omegaconf import OmegaConf

from helpers.cli import ROOT, run_runner
from helpers.inputs import write_inputs
from runner import options, schema
from launchers.base import launcher_of
from runner.errors import ConfigError
from runner.mode import mode_of

CONF = ROOT / "conf"
SINGLE_SCHEMA = {"model": schema.ModelConfig, "cluster": schema.ClusterConfig}
SEAMS = {"mode": "runner.mode.Mode", "input": "runner.readers.InputReader", "launcher": "launchers.base.Launcher", "staging": "runner.staging.Staging"}


def _option_files():
    for group in [*schema.GROUP_BASES, *SINGLE_SCHEMA]:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield group, path


def _schema_defaults(group: str, raw: dict) -> dict:
    parents = [d for d in raw.get("defaults", []) if d != "_self_"]
    if group in SINGLE_SCHEMA:
        node = OmegaConf.structured(SINGLE_SCHEMA[group])
        for parent in parents:  # an option built on another option (smollm2_135m_fp32 on smollm2_135m)
            if not parent.startswith("base_"):
                node = OmegaConf.merge(node, {k: v for k, v in yaml.safe_load((CONF / group / f"{parent}.yaml").read_text()).items() if k != "defaults"})
    else:
        (base,) = parents
        node = OmegaConf.structured(schema.options_of(group)[base.removeprefix("base_")])
    return OmegaConf.to_container(node, enum_to_str=True)


@pytest.mark.parametrize("group,path", list(_option_files()), ids=lambda v: getattr(v, "stem", v))
def test_an_option_yaml_holds_only_what_it_changes(group, path):
    raw = yaml.safe_load(path.read_text())
    defaults = _schema_defaults(group, raw)
    repeated = [key for key, value in raw.items() if key != "defaults" and defaults.get(key) == value]
    assert not repeated, f"{path.relative_to(ROOT)} repeats its schema's defaults for {repeated}"


@pytest.mark.parametrize("group", list(schema.GROUP_BASES))
def test_every_option_names_a_class_of_its_groups_seam(group):
    base = options.class_of(SEAMS[group], group)
    for name, option in schema.options_of(group).items():
        cfg = OmegaConf.create({group: OmegaConf.structured(option), "cluster": {}, "model": {}})
        assert isinstance(options.build(cfg, group, base), base), name


def test_a_target_that_names_no_class_or_another_groups_class_is_refused():
    cfg = OmegaConf.create({"mode": {"name": "per_tile", "_target_": "runner.no_such_module.Mode"}})
    with pytest.raises(ConfigError, match=r"mode\._target_=runner\.no_such_module\.Mode"):
        mode_of(cfg)
    cfg.mode._target_ = "launchers.local.LocalLauncher"
    with pytest.raises(ConfigError, match="is not a concrete runner.mode.Mode"):
        mode_of(cfg)


def test_a_job_file_without_target_gets_its_options_class_and_an_unknown_option_is_named():
    assert type(mode_of(OmegaConf.create({"mode": {"name": "server_per_node"}}))).__name__ == "ServerPerNode"
    with pytest.raises(ConfigError, match=r"mode=flux .*\['per_tile', 'server_per_node'\]"):
        mode_of(OmegaConf.create({"mode": {"name": "flux"}}))


def test_no_group_option_is_dispatched_on_its_name():
    pattern = re.compile(r"\.(mode|input|launcher|staging)\.name\s*(==|!=|in\b)")
    found = [f"{path.relative_to(ROOT)}:{n}" for folder in ("runner", "launchers") for path in (ROOT / folder).glob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found


def test_job_yaml_holds_the_merged_engine_arguments_and_a_bad_target_leaves_no_run(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    run = tmp_path / "run"
    proc = run_runner([f"input.path={inputs}", "dry_run=true", "+engine.max_num_seqs=8",
                       "cluster.engine.enforce_eager=false", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    job = yaml.safe_load((run / "job.yaml").read_text())
    # the model's dtype, the machine's override of enforce_eager, the command line's max_num_seqs
    assert job["engine"] == {"dtype": "bfloat16", "max_model_len": 2048, "enforce_eager": False,
                             "distributed_executor_backend": "uni", "max_num_seqs": 8}
    assert job["mode"]["_target_"] == "runner.per_tile.PerTile"
    bad = run_runner([f"input.path={inputs}", "dry_run=true", "mode._target_=runner.per_tile.Nope",
                      f"hydra.run.dir={tmp_path / 'bad'}"])
    assert bad.returncode == 2
    assert "mode._target_=runner.per_tile.Nope" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("overrides,named", [
    (["+engine.tensor_parallel_size=two"], "engine.tensor_parallel_size"),
    (["mode._target_=runner.mode.Mode"], "mode._target_=runner.mode.Mode"),
    (["launcher._target_=launchers.base.Launcher"], "launcher._target_=launchers.base.Launcher"),
    (["cluster=polaris", "cluster.ranks_per_node=2"], "cluster.ranks_per_node=2"),
    (["mode=server_per_node", "mode.serve_args=[--port,9000]"], "--port"),
], ids=["non-int-tp", "abstract-mode", "abstract-launcher", "ranks-on-gpus", "serve-args-port"])
def test_a_wrong_value_is_refused_in_one_line_before_a_run_directory_is_made(tmp_path, overrides, named):
    inputs = write_inputs(tmp_path / "in", {f"{r}.in": ["a"] for r in range(4)})
    run = tmp_path / "run"
    proc = run_runner([f"input.path={inputs}", "dry_run=true", *overrides, f"hydra.run.dir={run}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and named in proc.stderr.strip().splitlines()[-1]
    assert not run.exists()


def test_a_slurm_job_file_of_the_runner_before_cluster_gpus_per_node_still_loads(tmp_path):
    inputs = write_inputs(tmp_path / "in", {"0.in": ["a"], "1.in": ["b"]})
    run = tmp_path / "run"
    assert run_runner([f"input.path={inputs}", "dry_run=true", "launcher=slurm", f"hydra.run.dir={run}"]).returncode == 0
    old = yaml.safe_load((run / "job.yaml").read_text())
    old["launcher"]["gpus_per_node"] = 4
    del old["mode"]["_target_"], old["launcher"]["_target_"], old["staging"]["_target_"]
    (run / "job.yaml").write_text(yaml.safe_dump(old))
    from runner import job
    loaded = job.load(run / "job.yaml")
    assert loaded.launcher.name == "slurm" and "gpus_per_node" not in loaded.launcher
    assert type(launcher_of(loaded)).__name__ == "SlurmLauncher"
