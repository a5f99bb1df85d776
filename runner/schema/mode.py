"""The mode group: what every mode has, and one schema per mode."""

from dataclasses import dataclass, field
from enum import Enum
from typing import List

from omegaconf import MISSING

from runner.schema.fields import at_least, above_zero


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
    # seconds an engine may hold requests with no progress before it counts as hung (a stopped engine core, a
    # stuck device: a hung core still answers /health) and is killed and started again, its lines resent. per_tile:
    # no engine step returned (runner/engine_watch.py); server_per_node: no step of work on the server's /metrics
    # (no token generated, no prefill chunk into the KV cache, no request taken from its queue). 0: never
    stall_s: float = 300.0
    # deaths of an engine in a row (no line answered between them; a start that fails counts as one) before its
    # rank or host gives up on it and leaves its lines for a rerun; deaths with several lines in flight only narrow
    # down a poison line (only a line alone in flight at a death can get an ERROR record for it)
    max_restarts: int = 2


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
    # seconds before the first retry of a request, and between a server's failed restarts; doubles each time
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
    # seconds between SIGINT and SIGKILL when stopping a server
    stop_grace_s: float = 30.0
    # node-local folder for server logs and partial outputs
    scratch_dir: str = "/dev/shm"
    # seconds a host's claim on a file may go untouched (the host died) before a free host takes the file
    # over; claims are touched every fifth of it; 0: never (the file waits for a rerun)
    claim_stale_after_s: float = 600.0
    # extra `vllm serve` command-line arguments
    serve_args: List[str] = field(default_factory=list)
