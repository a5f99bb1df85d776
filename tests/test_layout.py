"""Engine layouts (runner/layout.py): the arithmetic and its refusals on the composed cluster and model configs
(no engine), and the dry-run PBS scripts of two Aurora layouts against golden files."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.cli import run_runner
from helpers.inputs import read_jsonl, write_inputs
from helpers.processes import run_processes, tagged_env
from helpers.compose import compose_config
from runner import job, layout
from runner.mode import mode_of
from runner.engine import engine_args
from runner.errors import ConfigError
from runner.topology import Placement

GOLDEN = Path(__file__).parent / "golden"


_cfg = compose_config


def _shape(cfg):
    laid_out = layout.layout_of(cfg)
    return [(e.devices, e.tensor_parallel_size) for e in laid_out.engines], laid_out.idle


def _job_file(cfg, folder: Path) -> Path:
    path = folder / "job.yaml"
    OmegaConf.save(cfg, path, resolve=True)
    return path


def _masks(cfg):
    return [layout.engine_env(cfg, e) for e in layout.layout_of(cfg).engines]


def test_aurora_holds_as_many_engines_as_divide_its_12_tiles():
    assert _shape(_cfg("cluster=aurora", "model=gpt_oss_120b")) == (
        [((0, 1, 2, 3), 4), ((4, 5, 6, 7), 4), ((8, 9, 10, 11), 4)], ())
    assert len(layout.layout_of(_cfg("cluster=aurora", "+engine.tensor_parallel_size=2")).engines) == 6
    assert len(layout.layout_of(_cfg("cluster=aurora")).engines) == 12
    pp = _cfg("cluster=aurora", "+engine.tensor_parallel_size=3", "+engine.pipeline_parallel_size=2")
    assert [(e.devices, e.pipeline_parallel_size) for e in layout.layout_of(pp).engines] == [
        ((0, 1, 2, 3, 4, 5), 2), ((6, 7, 8, 9, 10, 11), 2)]


def test_masks_list_every_device_of_the_engine_in_the_clusters_hierarchy():
    assert _masks(_cfg("cluster=aurora", "model=gpt_oss_120b"))[1] == {"ZE_AFFINITY_MASK": "4,5,6,7"}  # FLAT
    composite = _cfg("cluster=aurora", "model=gpt_oss_120b", "cluster.env.ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE")
    assert _masks(composite)[1] == {"ZE_AFFINITY_MASK": "2.0,2.1,3.0,3.1"}
    assert _masks(_cfg("cluster=polaris", "+engine.tensor_parallel_size=2")) == [
        {"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    # CPU: no mask; an engine of several slots lets the OS place its workers (vLLM-CPU binds one per NUMA node)
    assert _masks(_cfg("cluster=local_cpu", "+engine.tensor_parallel_size=2")) == [
        {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}]
    assert _masks(_cfg("cluster=local_cpu")) == [{}, {}]


def test_a_mixed_list_gives_each_engine_its_own_tensor_parallel_size_and_names_idle_tiles(tmp_path):
    mixed = _cfg("cluster=aurora", "model=gpt_oss_120b", "cluster.engines=[8,4]")
    assert _shape(mixed) == ([(tuple(range(8)), 8), ((8, 9, 10, 11), 4)], ())
    first, second = layout.layout_of(mixed).engines
    assert layout.engine_overrides(mixed, first) == {"tensor_parallel_size": 8, "distributed_executor_backend": "mp"}
    assert layout.engine_overrides(mixed, second) == {"distributed_executor_backend": "mp"}
    loaded = job.load(_job_file(mixed, tmp_path))  # the worker's view: job.yaml read back, struct and typed
    assert engine_args(layout.with_engine_overrides(loaded, first)) == {
        **engine_args(loaded), "tensor_parallel_size": 8, "distributed_executor_backend": "mp"}
    assert engine_args(loaded)["tensor_parallel_size"] == 4  # the job's own config is left as it was
    assert _shape(_cfg("cluster=aurora", "model=llama3_70b", "cluster.engines=[8]")) == (
        [(tuple(range(8)), 8)], (8, 9, 10, 11))


def test_cpu_slots_hold_a_tp2_engine_on_the_multiprocessing_executor_and_tp1_keeps_its_arguments():
    cpu = _cfg("cluster=local_cpu", "+engine.tensor_parallel_size=2")
    (only,) = layout.layout_of(cpu).engines
    assert only.devices == (0, 1) and layout.engine_overrides(cpu, only) == {"distributed_executor_backend": "mp"}
    tp1 = _cfg("cluster=local_cpu")
    assert [layout.engine_overrides(tp1, e) for e in layout.layout_of(tp1).engines] == [{}, {}]
    ray = _cfg("cluster=local_cpu", "+engine.tensor_parallel_size=2",
               "cluster.engine.distributed_executor_backend=ray")
    assert layout.engine_overrides(ray, layout.layout_of(ray).engines[0]) == {}  # the user's choice stays


@pytest.mark.parametrize("overrides,message", [
    (["+engine.tensor_parallel_size=5"], r"^tensor_parallel_size=5 does not divide the 12 tiles of cluster=aurora: "
     r".*1, 2, 3, 4, 6, 12.*cluster\.engines=\[5,5,2\].*cluster\.engines=\[5,5\] \(2 tiles idle\)$"),
    (["model=llama3_70b"], r"does not divide the 12 tiles.*cluster\.engines=\[8,4\]"),
    (["+engine.tensor_parallel_size=8", "+engine.pipeline_parallel_size=2"],
     r"^tensor_parallel_size=8 x pipeline_parallel_size=2 = 16 is more than the 12 tiles of one cluster=aurora "
     r"node but not a whole number of nodes"),
    (["cluster.engines=[8,8]"], r"cluster\.engines=\[8,8\] needs 16 tiles, more than the 12"),
    (["cluster.engines=[8,3]", "+engine.pipeline_parallel_size=2"], r"make each entry a multiple of 2"),
    (["cluster.engines=[4,0]"], r"at least one device"),
    (["+engine.tensor_parallel_size=0"], r"both must be >= 1"),
])
def test_layouts_that_do_not_fit_a_node_are_refused_naming_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        layout.layout_of(_cfg("cluster=aurora", *overrides))


def test_a_launch_that_does_not_fit_exits_2_in_one_line_and_makes_no_run_directory(tmp_path):
    inputs = write_inputs(tmp_path / "in", {f"{r}.in": ["Hi?"] for r in range(12)})
    run = tmp_path / "run"
    proc = run_runner(["cluster=aurora", "model=llama3_70b", "dry_run=true", f"input.path={inputs}",
                       f"hydra.run.dir={run}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "tensor_parallel_size=8 does not divide the 12 tiles of cluster=aurora" in proc.stderr
    assert not run.exists()


def test_a_cpu_cluster_lays_engines_on_its_slots():
    with pytest.raises(ConfigError, match=r"tensor_parallel_size=3 does not divide the 4 CPU slots of cluster=local_cpu"):
        layout.layout_of(_cfg("cluster=local_cpu", "cluster.ranks_per_node=4", "+engine.tensor_parallel_size=3"))
    assert len(layout.layout_of(_cfg("cluster=local_cpu", "cluster.ranks_per_node=4",
                                      "+engine.tensor_parallel_size=2")).engines) == 2


def _dry_run(tmp_path: Path, name: str, ranks: int, overrides: list) -> str:
    """A real dry-run launch of 4 Aurora nodes (`ranks` input files); its job.pbs, with the run folder and the
    interpreter made stable, against the golden file; returns the job file."""
    inputs = write_inputs(tmp_path / "in", {f"{r}.in": [f"Question {r}?"] for r in range(ranks)})
    run = tmp_path / "run"
    proc = run_runner(["cluster=aurora", "nodes=4", "launcher=pbs", "launcher.queue=prod", "launcher.account=Proj",
                       "launcher.filesystems=home:flare", "dry_run=true", f"input.path={inputs}",
                       f"hydra.run.dir={run}", *overrides])
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (run / "job.pbs").read_text()
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    stable = text.replace(str(run), "/RUN").replace(sys.executable, "/PYTHON")
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(stable)
    assert stable == golden.read_text()
    return str(run / "job.yaml")


def _rank_masks(job_file: str, per_node: int) -> list:
    cfg = job.load(Path(job_file))
    mode = mode_of(cfg)
    return [mode.device_env(Placement(r, r % per_node, 4 * per_node, per_node, "x")) for r in range(per_node)]


def test_dry_run_of_4_aurora_nodes_of_3_tp4_engines_matches_golden(tmp_path):
    job_file = _dry_run(tmp_path, "pbs_aurora_3x_tp4.sh", 12, ["model=gpt_oss_120b"])
    assert _rank_masks(job_file, 3) == [{"ZE_AFFINITY_MASK": m} for m in ("0,1,2,3", "4,5,6,7", "8,9,10,11")]


def test_dry_run_of_4_aurora_nodes_of_mixed_8_4_engines_matches_golden(tmp_path):
    job_file = _dry_run(tmp_path, "pbs_aurora_mixed_8_4.sh", 8, ["model=gpt_oss_120b", "cluster.engines=[8,4]"])
    assert _rank_masks(job_file, 2) == [{"ZE_AFFINITY_MASK": "0,1,2,3,4,5,6,7"}, {"ZE_AFFINITY_MASK": "8,9,10,11"}]
    cfg = OmegaConf.load(job_file)
    assert cfg.engine.tensor_parallel_size == 4 and list(cfg.cluster.engines) == [8, 4]


def test_a_tensor_parallel_size_that_does_not_split_the_models_attention_heads_is_refused_at_launch():
    # SmolLM2-135M has 9 attention heads: TP 2 cannot split them, TP 3 can
    mode = mode_of(_cfg("cluster=local_cpu", "+engine.tensor_parallel_size=2"))
    with pytest.raises(ConfigError, match=r"^tensor_parallel_size=2 does not divide the 9 attention heads of "
                                          r"model=smollm2_135m: use one of 1, 3, 9$"):
        mode.check([])
    mode_of(_cfg("cluster=local_cpu", "cluster.ranks_per_node=3", "+engine.tensor_parallel_size=3")).check([])


def _children_of(parents) -> dict:
    """pid -> argv of the live processes whose parent is one of `parents` (vLLM's workers rename their title,
    which hides their environment, so they are found through their parent, the rank)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] != "Z" and int(fields[1]) in parents:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.engine
def test_a_tp3_engine_on_three_cpu_slots_answers_every_line_once_on_three_workers_and_leaves_nothing(tmp_path):
    # SmolLM2's 9 heads split over TP 3 (not 2); local_cpu's 3 slots hold one engine: one rank reads 0.in
    lines = ["What is the capital of France?", "Name a primary color.", "What is 2 + 2?", "Say hello."]
    inputs = write_inputs(tmp_path / "in", {"0.in": lines, "1.in": ["not read: the layout has one rank"]})
    run, tag = tmp_path / "run", f"layout-{tmp_path.name}"
    seen, workers, done = {}, {}, threading.Event()

    def watch():  # every process of the run and the children of its rank, as they come and go
        while not done.wait(0.5):
            seen.update(run_processes(tag))
            ranks = {pid for pid, argv in seen.items() if "runner.worker" in argv}
            workers.update(_children_of(ranks))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = run_runner([f"input.path={inputs}", "mode.assign=by_rank", f"hydra.run.dir={run}",
                           "cluster.ranks_per_node=3",
                           "+engine.tensor_parallel_size=3", "sampling.max_tokens=12"], env=tagged_env(tag))
    finally:
        done.set()
        watcher.join()
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(run / "out" / "0.out")
    assert [(r["line"], r["prompt"], r["status"]) for r in records] == [
        (n, text, "SUCCESS") for n, text in enumerate(lines, start=1)]
    assert all(r["response"].strip() and r["output_tokens"] > 0 for r in records)  # TP 3 bf16 answers differ from TP 1
    assert not (run / "out" / "1.out").exists() and not (run / "out" / "1.log.jsonl").exists()
    # the rank ran its engine on vLLM's multiprocessing executor: one worker process per slot, none left after
    tp_workers = {pid for pid, argv in workers.items() if not any("resource_tracker" in a for a in argv)}
    assert len(tp_workers) >= 3, workers
    assert run_processes(tag) == {} and not set(_children_of(set(seen))) and not any(
        Path(f"/proc/{pid}").exists() for pid in tp_workers)
