"""One worker's numbers (a per_tile rank or a server_per_node host): stats/<name>.json, read back by the summary.

The worker (runner.worker) makes a WorkerStats, hands it to its mode's run function, which fills it and returns
it, and writes it when the run function ends, also when it fails or is cancelled (the counts so far).
"""

import json
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional

from runner import atomic
from runner.run_dir import RunDir
from runner.tally import Tally
from runner.work_queue import attempt_id


@dataclass
class WorkerStats:
    # rank<i> (per_tile) or host<i> (server_per_node): the name of its stats file
    name: str = ""
    # the machine it ran on
    host: str = ""
    # this run's answered lines, ERROR records among them, and their tokens
    answered: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    # lines with a record now (this run's and earlier runs'), and those answered by an earlier run
    prompts: int = 0
    resumed: int = 0
    # seconds: starting the engine (or `vllm serve`), generating (engine start excluded), the whole worker
    engine_start_s: float = 0.0
    generate_s: float = 0.0
    wall_s: float = 0.0
    # per_tile: the rank on its node, its device variables, the part of generate_s spent on its own work
    # (records, checkpoint, progress lines; the rest was vLLM), and `restarts`: its engine built again after it
    # died or hung
    local_rank: Optional[int] = None
    device: Optional[Dict[str, str]] = None
    record_s: Optional[float] = None
    # server_per_node: requests in flight per server, the files it answered, server restarts (of all its
    # servers), requests sent to each of its servers (a resent request counts again), stopped near the walltime
    concurrency: Optional[int] = None
    files: Optional[List[str]] = None
    restarts: Optional[int] = None
    requests: Optional[List[int]] = None
    stopped_for_walltime: Optional[bool] = None
    # the job attempt that wrote it and when (epoch s), set by `write`
    attempt: str = ""
    ended_at: float = 0.0

    def count(self, tally: Tally) -> None:
        """Take this run's counts from the worker's tally."""
        self.answered, self.errors = tally.answered, tally.errors
        self.prompt_tokens, self.output_tokens = tally.prompt_tokens, tally.output_tokens

    def to_json(self) -> Dict[str, Any]:
        """The written dict: a mode's fields only where it sets them (the other mode's stay out of the file)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "WorkerStats":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})


def write(run: RunDir, stats: WorkerStats) -> None:
    """stats/<name>.json, tagged with the job attempt that made it (atomically: the summary may read it now)."""
    stats.attempt, stats.ended_at = attempt_id(), time.time()
    run.stats.mkdir(parents=True, exist_ok=True)
    atomic.write_json(run.stats_file(stats.name), stats.to_json(), indent=1)


def this_attempt(run: RunDir) -> List[WorkerStats]:
    """The stats of the current job attempt; outside a job (a later `python -m runner.summary`), those of the
    attempt that wrote the newest stats."""
    workers = [WorkerStats.from_json(json.loads(p.read_text())) for p in sorted(run.stats.glob("*.json"))]
    attempt = attempt_id()
    if not any(w.attempt == attempt for w in workers):
        attempt = max(workers, key=lambda w: w.ended_at, default=WorkerStats()).attempt
    return [w for w in workers if w.attempt == attempt]
