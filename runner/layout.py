"""How a job's engines sit on each node, derived from the engine arguments and the cluster.

An engine spans tensor_parallel_size x pipeline_parallel_size devices (tiles on Aurora, GPUs on Polaris, slots on
CPU: cluster.ranks_per_node); a node holds as many such engines as divide its devices, or the engines that
`cluster.engines` lists (mixed sizes: [8, 4] on Aurora's 12 tiles; each entry's tensor_parallel_size is the entry
/ pipeline_parallel_size). Devices are handed out in order, so an engine's devices are neighbours (the tiles of
one GPU first). An engine larger than a node spans nodes_per_engine whole nodes (a multiple of the node's devices)
and runs on a Ray cluster of those nodes (runner/ray_group.py).
"""

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from omegaconf import DictConfig, open_dict

from runner.devices import device_env
from runner.engine import engine_args
from runner.errors import ConfigError
from runner.schema import Accelerator

# the executor of an engine over several devices of one node: vLLM's multiprocessing workers ("uni", the
# one-process executor, cannot run more than one device)
MULTI_DEVICE_EXECUTOR = "mp"
# the executor of an engine over several nodes: vLLM's Ray workers, on the Ray cluster of the engine's nodes
MULTI_NODE_EXECUTOR = "ray"
# the unit of a node's devices when it has no GPU: cluster.ranks_per_node slots
CPU_SLOTS = "CPU slots"
_CPU_BIND = "VLLM_CPU_OMP_THREADS_BIND"


@dataclass(frozen=True)
class Engine:
    # the devices of the node it runs on, numbered 0..n-1
    devices: Tuple[int, ...]
    tensor_parallel_size: int
    pipeline_parallel_size: int
    # the nodes it spans (> 1: every device of each of them, over Ray)
    nodes: int = 1


@dataclass(frozen=True)
class Layout:
    # the engines of every node, in local-rank order
    engines: Tuple[Engine, ...]
    devices_per_node: int
    # what a device is here: tiles, GPUs or CPU slots
    unit: str
    # nodes of one engine; > 1: one engine (its only one) spans this many consecutive nodes
    nodes_per_engine: int = 1

    def engines_in_job(self, nodes: int) -> int:
        """Engines of the whole job: one input file each."""
        return nodes * len(self.engines) // self.nodes_per_engine

    @property
    def idle(self) -> Tuple[int, ...]:
        """The devices of a node no engine uses."""
        used = {d for engine in self.engines for d in engine.devices}
        return tuple(d for d in range(self.devices_per_node) if d not in used)


def accelerator_of(cluster: DictConfig) -> Accelerator:
    value = cluster.get("accelerator", Accelerator.cpu)
    return Accelerator(getattr(value, "value", value))


def devices_of(cluster: DictConfig) -> Tuple[int, str]:
    """(devices per node, their unit): GPUs x tiles on a GPU cluster, cluster.ranks_per_node slots on CPU."""
    gpus, tiles = int(cluster.get("gpus_per_node", 0)), max(int(cluster.get("tiles_per_gpu", 1)), 1)
    if accelerator_of(cluster) != Accelerator.cpu and gpus > 0:
        return gpus * tiles, "tiles" if tiles > 1 else "GPUs"
    return int(cluster.get("ranks_per_node", 1)), CPU_SLOTS


def parallelism(cfg: DictConfig) -> Tuple[int, int]:
    """(tensor_parallel_size, pipeline_parallel_size) of the job's merged engine arguments."""
    args = engine_args(cfg)
    try:
        tp, pp = (int(1 if args.get(key) is None else args[key]) for key in ("tensor_parallel_size",
                                                                              "pipeline_parallel_size"))
    except (TypeError, ValueError):
        raise ConfigError(f"tensor_parallel_size={args.get('tensor_parallel_size')!r}, pipeline_parallel_size="
                          f"{args.get('pipeline_parallel_size')!r}: both must be whole numbers") from None
    if tp < 1 or pp < 1:
        raise ConfigError(f"tensor_parallel_size={tp}, pipeline_parallel_size={pp}: both must be >= 1")
    return tp, pp


def layout_of(cfg: DictConfig) -> Layout:
    """The layout of every node of the job; a ConfigError naming the fix when it does not fit a node."""
    cluster = cfg.get("cluster") or {}
    devices, unit = devices_of(cluster)
    tp, pp = parallelism(cfg)
    name, listed = cluster.get("name", "?"), [int(n) for n in cluster.get("engines") or []]
    if not listed and tp * pp > devices:
        return _multi_node(tp, pp, devices, unit, name, int(cfg.get("nodes", 1)))
    sizes = (_listed_sizes(listed, pp, devices, unit, name) if listed
             else _even_sizes(tp, pp, devices, unit, name))
    engines, start = [], 0
    for size in sizes:
        engines.append(Engine(tuple(range(start, start + size)), size // pp, pp))
        start += size
    return Layout(tuple(engines), devices, unit)


def _what(tp: int, pp: int) -> str:
    return f"tensor_parallel_size={tp}" + (f" x pipeline_parallel_size={pp} = {tp * pp}" if pp > 1 else "")


def _multi_node(tp: int, pp: int, devices: int, unit: str, cluster: str, nodes: int) -> Layout:
    """One engine over whole nodes: TP x PP a multiple of a node's devices, the job's nodes a multiple of that."""
    per_engine = tp * pp
    if per_engine % devices:
        whole = [devices * n for n in (per_engine // devices, per_engine // devices + 1) if n > 1]
        raise ConfigError(f"{_what(tp, pp)} is more than the {devices} {unit} of one cluster={cluster} node but not "
                          f"a whole number of nodes: make tensor_parallel_size x pipeline_parallel_size "
                          f"{' or '.join(map(str, whole))} (whole nodes), or at most {devices} (one node)")
    span = per_engine // devices
    if nodes % span:
        fits = sorted({span * max(nodes // span, 1), span * (nodes // span + 1)})
        raise ConfigError(f"nodes={nodes} is not a multiple of the {span} nodes one engine of {_what(tp, pp)} spans "
                          f"on cluster={cluster}: use nodes={' or nodes='.join(map(str, fits))}")
    return Layout((Engine(tuple(range(devices)), tp, pp, span),), devices, unit, span)


def _even_sizes(tp: int, pp: int, devices: int, unit: str, cluster: str) -> List[int]:
    per_engine, what = tp * pp, _what(tp, pp)
    if devices % per_engine:
        fits = [n for n in range(1, devices + 1) if devices % n == 0 and n % pp == 0]
        whole, rest = [per_engine] * (devices // per_engine), devices % per_engine
        mixed = (f"cluster.engines={_hydra_list(whole + [rest])} (tensor_parallel_size {rest // pp} on the last "
                 f"{rest}) or " if rest % pp == 0 else "")
        raise ConfigError(f"{what} does not divide the {devices} {unit} of cluster={cluster}: use tensor_parallel_size"
                          f" x pipeline_parallel_size of {', '.join(map(str, fits))}, or give each engine's {unit}: "
                          f"{mixed}cluster.engines={_hydra_list(whole)} ({rest} {unit} idle)")
    return [per_engine] * (devices // per_engine)


def _listed_sizes(listed: List[int], pp: int, devices: int, unit: str, cluster: str) -> List[int]:
    shown = f"cluster.engines={_hydra_list(listed)}"
    if any(n < 1 for n in listed):
        raise ConfigError(f"{shown}: each engine needs at least one device; drop the entries below 1")
    if any(n % pp for n in listed):
        raise ConfigError(f"{shown}: pipeline_parallel_size={pp} stages do not split every entry evenly: make each "
                          f"entry a multiple of {pp}")
    if sum(listed) > devices:
        raise ConfigError(f"{shown} needs {sum(listed)} {unit}, more than the {devices} of one cluster={cluster} node: "
                          "shorten the list (an engine across nodes takes whole nodes: leave cluster.engines empty)")
    return listed


def check_ranks_per_node(cfg: DictConfig, laid_out: Layout) -> None:
    """On a GPU cluster the layout decides the ranks: cluster.ranks_per_node may only say the same (or be 1)."""
    c = cfg.cluster
    if laid_out.unit != CPU_SLOTS and c.ranks_per_node not in (1, len(laid_out.engines)):
        raise ConfigError(f"cluster.ranks_per_node={c.ranks_per_node} counts CPU slots only: on cluster={c.name} "
                          f"a node runs one rank per engine ({len(laid_out.engines)} on its "
                          f"{laid_out.devices_per_node} {laid_out.unit}); to run fewer engines, list their "
                          "devices with cluster.engines=[...]")


def check_heads(cfg: DictConfig, laid_out: Layout) -> None:
    """vLLM splits the attention heads over tensor_parallel_size: refuse, at launch, a size that does not divide
    them (read from a local model folder's config.json; a hub id is left to vLLM)."""
    config = Path(str(cfg.model.path)) / "config.json"
    if not config.is_file():
        return
    hf = json.loads(config.read_text())
    heads = hf.get("num_attention_heads") or (hf.get("text_config") or {}).get("num_attention_heads")
    bad = sorted({e.tensor_parallel_size for e in laid_out.engines if heads and heads % e.tensor_parallel_size})
    if bad:
        fits = [n for n in range(1, heads + 1) if heads % n == 0]
        raise ConfigError(f"tensor_parallel_size={bad[0]} does not divide the {heads} attention heads of "
                          f"model={cfg.model.name}: use one of {', '.join(map(str, fits))}")


def _hydra_list(sizes: List[int]) -> str:
    """A list as a command-line override writes it (no spaces: one shell word)."""
    return f"[{','.join(map(str, sizes))}]"


def engine_env(cfg: DictConfig, engine: Engine) -> Dict[str, str]:
    """The variable that shows the engine its devices; the mask form follows cluster.env's
    ZE_FLAT_DEVICE_HIERARCHY (FLAT or COMBINED: tile numbers; COMPOSITE or unset: gpu.tile).

    A CPU engine of several slots gets VLLM_CPU_OMP_THREADS_BIND=nobind (unless cluster.env sets it): vLLM-CPU's
    default binding puts each TP worker on a NUMA node of its own and refuses more workers than NUMA nodes."""
    cluster, env = cfg.cluster, cfg.cluster.get("env") or {}
    if devices_of(cluster)[1] == CPU_SLOTS:
        wants_bind = len(engine.devices) > 1 and _CPU_BIND not in env
        return {_CPU_BIND: "nobind"} if wants_bind else {}
    flat = str(env.get("ZE_FLAT_DEVICE_HIERARCHY", "")).upper() in ("FLAT", "COMBINED")
    return device_env(engine.devices, accelerator_of(cluster), int(cluster.get("gpus_per_node", 0)),
                      int(cluster.get("tiles_per_gpu", 1)), flat)


def engine_overrides(cfg: DictConfig, engine: Engine) -> Dict[str, Any]:
    """The engine arguments this engine gets over the job's: its own tensor_parallel_size (a cluster.engines
    entry), and the multiprocessing executor when it spans several devices and the job's executor is none or
    the one-process "uni"; Ray's when it spans several nodes (no other executor reaches them)."""
    args, overrides = engine_args(cfg), {}
    if int(args.get("tensor_parallel_size") or 1) != engine.tensor_parallel_size:  # (0 was refused by layout_of)
        overrides["tensor_parallel_size"] = engine.tensor_parallel_size
    executor = args.get("distributed_executor_backend")
    if engine.nodes > 1 and executor != MULTI_NODE_EXECUTOR:
        overrides["distributed_executor_backend"] = MULTI_NODE_EXECUTOR
    elif engine.nodes == 1 and len(engine.devices) > 1 and executor in (None, "uni"):
        overrides["distributed_executor_backend"] = MULTI_DEVICE_EXECUTOR
    return overrides


def with_engine_overrides(cfg: DictConfig, engine: Engine) -> DictConfig:
    """A copy of the job's config whose engine arguments are this engine's."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.engine.update(engine_overrides(cfg, engine))
    return cfg


def describe(cfg: DictConfig, layout: Layout) -> str:
    """One line: engines per node, the devices and parallelism of each, its device mask, the idle devices."""
    parts = []
    for i, engine in enumerate(layout.engines):
        shape = f"TP {engine.tensor_parallel_size}" + (f" x PP {engine.pipeline_parallel_size}"
                                                      if engine.pipeline_parallel_size > 1 else "")
        mask = " ".join(f"{k}={v}" for k, v in engine_env(cfg, engine).items()) or "no device mask"
        executor = engine_overrides(cfg, engine).get("distributed_executor_backend")
        span = f"{engine.nodes} nodes x " if engine.nodes > 1 else ""
        parts.append(f"#{i} {span}{len(engine.devices)} {layout.unit} ({shape}{', ' + executor if executor else ''}) "
                     f"{mask}")
    if layout.nodes_per_engine > 1:
        return (f"layout: {cfg.get('nodes', 1)} node(s) = {layout.engines_in_job(cfg.get('nodes', 1))} engine(s) of "
                f"{layout.nodes_per_engine} nodes each, on one Ray cluster per engine: {'; '.join(parts)}")
    return (f"layout: {cfg.get('nodes', 1)} node(s) x {len(layout.engines)} engine(s) per node of "
            f"{layout.devices_per_node} {layout.unit}: {'; '.join(parts)}; {len(layout.idle)} {layout.unit} idle"
            f"{' (' + ','.join(map(str, layout.idle)) + ')' if layout.idle else ''}")


def check_cpu_pipeline(cfg: DictConfig, laid_out: Layout) -> None:
    """vLLM-CPU makes the buffers a later pipeline stage receives into only in its compile warm-up, which
    enforce_eager skips (the stage then fails on the first request): refuse that pair at launch."""
    eager = engine_args(cfg).get("enforce_eager")
    pp = max(e.pipeline_parallel_size for e in laid_out.engines)
    if laid_out.unit == CPU_SLOTS and pp > 1 and eager:
        raise ConfigError(f"pipeline_parallel_size={pp} on CPU needs enforce_eager off (vLLM-CPU sets up the later "
                          "stages in its compile warm-up, which enforce_eager skips): add +engine.enforce_eager=false")
