"""Engines across nodes (runner/layout.py, runner/ray_group.py) without an engine: the layout and its refusals on
the composed configs, and the dry-run job scripts (PBS and Slurm) of the Aurora layouts against golden files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import run_runner
from helpers.inputs import write_inputs
from helpers.compose import compose_config
from launchers.local import rank_env
from runner import layout
from runner.mode import mode_of
from runner.errors import ConfigError
from runner.topology import NODE_IP_VAR

GOLDEN = Path(__file__).parent / "golden"


_cfg = compose_config


def test_405b_spans_two_aurora_nodes_on_ray_and_each_engine_reads_one_file():
    cfg = _cfg("cluster=aurora", "model=llama3_405b", "nodes=4")
    laid_out = layout.layout_of(cfg)
    (engine,) = laid_out.engines
    assert (laid_out.nodes_per_engine, engine.nodes, engine.devices) == (2, 2, tuple(range(12)))
    assert (engine.tensor_parallel_size, engine.pipeline_parallel_size) == (8, 3)
    assert layout.engine_overrides(cfg, engine) == {"distributed_executor_backend": "ray"}
    mode = mode_of(cfg)
    assert mode.procs_per_node() == 1  # one rank per node: the group's first answers, the others hold a raylet
    assert [p.name for p in mode.input_files()] == ["0.in", "1.in"]  # 4 nodes = 2 engines
    assert layout.engine_env(cfg, engine) == {"ZE_AFFINITY_MASK": ",".join(map(str, range(12)))}
    assert "2 engine(s) of 2 nodes each, on one Ray cluster per engine" in layout.describe(cfg, laid_out)
    polaris = _cfg("cluster=polaris", "model=llama3_405b", "nodes=6", "+engine.tensor_parallel_size=4",
                   "+engine.pipeline_parallel_size=6")
    assert layout.layout_of(polaris).nodes_per_engine == 6


@pytest.mark.parametrize("overrides,message", [
    (["nodes=3"], r"^nodes=3 is not a multiple of the 2 nodes one engine of tensor_parallel_size=8 x "
                  r"pipeline_parallel_size=3 = 24 spans on cluster=aurora: use nodes=2 or nodes=4$"),
    (["+engine.pipeline_parallel_size=2"], r"= 16 is more than the 12 tiles of one cluster=aurora node but not a "
                                           r"whole number of nodes: make .* 24 \(whole nodes\), or at most 12"),
    (["cluster.engines=[12,12]"], r"leave cluster.engines empty"),
])
def test_an_engine_across_nodes_that_does_not_take_whole_nodes_is_refused_naming_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        layout.layout_of(_cfg("cluster=aurora", "model=llama3_405b", "nodes=4", *overrides))


def test_pipeline_stages_on_cpu_under_enforce_eager_are_refused_at_launch():
    cfg = _cfg("nodes=2", "cluster.ranks_per_node=1", "+engine.pipeline_parallel_size=2")
    with pytest.raises(ConfigError, match=r"needs enforce_eager off .* add \+engine.enforce_eager=false$"):
        mode_of(cfg).check([])
    mode_of(_cfg("nodes=2", "cluster.ranks_per_node=1", "+engine.pipeline_parallel_size=2",
                         "+engine.enforce_eager=false")).check([])


def test_the_local_launchers_nodes_get_loopback_addresses_of_their_own():
    # 127.0.0.1 is not one: Ray swaps it for the machine's outside address
    assert [rank_env(i, 4, 2)[NODE_IP_VAR] for i in range(4)] == ["127.0.0.2", "127.0.0.2", "127.0.0.3",
                                                                  "127.0.0.3"]
    assert rank_env(2 * 300, 601, 2)[NODE_IP_VAR] == "127.0.1.46"


def _dry_run(tmp_path: Path, launcher: list, script: str, golden: str, ranks: int, overrides: list) -> str:
    """A real dry-run launch on 4 Aurora nodes; its script, with the run folder and the interpreter made stable,
    against the golden file (UPDATE_GOLDEN=1 rewrites it)."""
    inputs = write_inputs(tmp_path / "in", {f"{r}.in": [f"Question {r}?"] for r in range(ranks)})
    run = tmp_path / "run"
    proc = run_runner(["cluster=aurora", "nodes=4", *launcher, "dry_run=true", f"input.path={inputs}",
                       f"hydra.run.dir={run}", *overrides])
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (run / script).read_text()
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    stable = text.replace(str(run), "/RUN").replace(sys.executable, "/PYTHON")
    if os.environ.get("UPDATE_GOLDEN"):
        (GOLDEN / golden).write_text(stable)
    assert stable == (GOLDEN / golden).read_text()
    return stable


PBS = ["launcher=pbs", "launcher.queue=prod", "launcher.account=Proj", "launcher.filesystems=home:flare"]
SLURM = ["launcher=slurm", "launcher.partition=prod", "launcher.account=Proj"]


def test_dry_run_of_405b_on_4_aurora_nodes_is_one_rank_per_node_in_pbs_and_slurm(tmp_path):
    pbs = _dry_run(tmp_path / "pbs", PBS, "job.pbs", "pbs_aurora_405b_2x2.sh", 2, ["model=llama3_405b"])
    assert "mpiexec -n 4 -ppn 1 " in pbs  # the ranks start the Ray clusters: the script has no Ray line
    slurm = _dry_run(tmp_path / "slurm", SLURM, "job.sbatch", "slurm_aurora_405b_2x2.sh", 2, ["model=llama3_405b"])
    assert "#SBATCH --nodes=4\n" in slurm and "#SBATCH --ntasks-per-node=1\n" in slurm


@pytest.mark.parametrize("golden,ranks,overrides,per_node", [
    ("slurm_aurora_3x_tp4.sh", 12, ["model=gpt_oss_120b"], 3),
    ("slurm_aurora_mixed_8_4.sh", 8, ["model=gpt_oss_120b", "cluster.engines=[8,4]"], 2),
])
def test_dry_run_slurm_scripts_of_the_aurora_layouts_match_golden(tmp_path, golden, ranks, overrides, per_node):
    slurm = _dry_run(tmp_path, SLURM, "job.sbatch", golden, ranks, overrides)
    assert f"#SBATCH --ntasks-per-node={per_node}\n" in slurm
