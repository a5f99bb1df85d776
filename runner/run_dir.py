"""The files of one run: every path under a run directory is named here, and only here.

    job.yaml  job.pbs | job.sh | job.sbatch  pbs_job_id | slurm_job_id  slurm/  summary.json  too_long.json
    staging.json  lock/  claims/<attempt>/  ray/<attempt>/engine<g>.address  stats/<worker>.json  logs/<step><i>.log
    logs/job.log  logs/host<i>/  logs/ray<rank>.log
    out/{rank}.out | out/<input>.jsonl  out/{rank}.parquet | out/<input>.parquet  out/<key>.log.jsonl (ledger)
    out/<key>.fp.json (sidecar)
    work.json  out/parts/<input>.<start>-<stop>[.log|.errors].jsonl (per_tile's work items, joined at the end)
    out/parts/<input>.<start>-<stop>.inflight (a work item's in-flight journal)
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# the ledger's suffix; the sidecar replaces it with _SIDECAR
_LEDGER = ".log.jsonl"
_SIDECAR = ".fp.json"
# a server_per_node output: out/<input file name> + this (its ledger ends in .log.jsonl, so this too)
FILE_OUTPUT_SUFFIX = ".jsonl"
# per_tile's joined output of an input in output.format=text (the original per_tile script's lines)
_TEXT_OUTPUT = ".out"


@dataclass(frozen=True)
class Item:
    """One input file and what the run writes for it."""

    input: Path
    output: Path
    ledger: Path


# a work item's file in out/parts/: a ledger (.log), finished with ERROR records among them (.errors), or finished
PIECE_STATES = ("log", "errors", "done")
_PIECE = re.compile(r"(.+)\.(\d+)-(\d+)(?:\.(log|errors))?\.jsonl", re.DOTALL)  # a name may hold a newline


def sidecar_of(ledger: Path) -> Path:
    """The fingerprint sidecar beside a ledger (it outlives the ledger: a finished output keeps it)."""
    return ledger.with_name(ledger.name.removesuffix(_LEDGER) + _SIDECAR)


def parquet_of(output: Path) -> Path:
    """output.parquet: the Parquet copy beside a finished output (0.out -> 0.parquet, a.tsv.jsonl -> a.tsv.parquet)."""
    return output.with_suffix(".parquet")


def file_output_name(input_name: str) -> str:
    return input_name + FILE_OUTPUT_SUFFIX


@dataclass(frozen=True)
class RunDir:
    """The files of one run. Everything a rank writes lands under `root` (on the shared filesystem)."""

    root: Path

    @property
    def job_file(self) -> Path:
        return self.root / "job.yaml"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def stats(self) -> Path:
        return self.root / "stats"

    @property
    def too_long_file(self) -> Path:
        """The input lines found too long at launch under mode.on_too_long=record (runner.preflight)."""
        return self.root / "too_long.json"

    @property
    def claims(self) -> Path:
        """server_per_node's work-queue claims, a folder per attempt (made here once, not by every host)."""
        return self.root / "claims"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    @property
    def staging_file(self) -> Path:
        """What staging=mpi_bcast copied, to how many nodes, how fast."""
        return self.root / "staging.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    # what the launchers write
    def script(self, name: str) -> Path:
        """The script a launcher runs or submits (its `script_name`: job.sh, job.pbs, job.sbatch)."""
        return self.root / name

    def job_id_file(self, scheduler: str) -> Path:
        """pbs_job_id, slurm_job_id: the id of the job submitted for this run."""
        return self.root / f"{scheduler}_job_id"

    @property
    def slurm_folder(self) -> Path:
        """submitit's folder: its pickles and the Slurm job's logs."""
        return self.root / "slurm"

    @property
    def job_log(self) -> Path:
        """A batch job's own log (the PBS script's output)."""
        return self.logs / "job.log"

    def step_log(self, step: str, index: int) -> Path:
        """The log of process `index` of a step started by the local launcher (rank0.log, stage0.log, ...)."""
        return self.logs / f"{step}{index}.log"

    def host_logs(self, rank: int) -> Path:
        """A server_per_node host's server logs, copied from node-local scratch."""
        return self.logs / f"host{rank}"

    def ray_address_file(self, attempt: str, engine: int) -> Path:
        """Where the head of engine `engine`'s Ray cluster (an engine across nodes) publishes its address for
        the engine's other nodes, in this attempt; empty once the head ended."""
        return self.root / "ray" / attempt / f"engine{engine}.address"

    def ray_log(self, rank: int) -> Path:
        """The output of a rank's Ray node (`ray start`); Ray's own logs stay in the node's session folder."""
        return self.logs / f"ray{rank}.log"

    def stats_file(self, worker: str) -> Path:
        return self.stats / f"{worker}.json"

    # outputs
    def rank_item(self, input_file: Path, rank: int) -> Item:
        """per_tile: a rank's input, its finished output and its resume ledger."""
        return Item(input_file, self.out / f"{rank}.out", self.out / f"{rank}{_LEDGER}")

    def file_item(self, input_file: Path) -> Item:
        """server_per_node: an input file, its finished output and its resume ledger."""
        name = input_file.name
        return Item(input_file, self.out / file_output_name(name), self.out / f"{name}{_LEDGER}")

    def spread_item(self, input_file: Path, text: bool = False) -> Item:
        """per_tile spread over its ranks: an input file, its joined output (out/<input>.jsonl, or out/<input>.out
        in output.format=text) and the ledger name its sidecar is kept under (the answers themselves are in
        its work items' files until they are joined)."""
        item = self.file_item(input_file)
        return Item(item.input, self.out / f"{input_file.name}{_TEXT_OUTPUT}", item.ledger) if text else item

    @property
    def work_file(self) -> Path:
        """per_tile: the work items of this launch and which rank answers which (written by the launch)."""
        return self.root / "work.json"

    @property
    def parts(self) -> Path:
        return self.out / "parts"

    def piece(self, name: str, start: int, stop: int, state: str) -> Path:
        """The file of the work item [start, stop) of input `name` in one of PIECE_STATES."""
        suffix = "" if state == "done" else f".{state}"
        return self.parts / f"{name}.{start}-{stop}{suffix}{FILE_OUTPUT_SUFFIX}"

    def journal(self, name: str, start: int, stop: int) -> Path:
        """The in-flight journal of a work item: the lines its rank put in the engine (runner/inflight.py)."""
        return self.parts / f"{name}.{start}-{stop}.inflight"

    def pieces(self) -> Dict[str, List[Tuple[int, int, str]]]:
        """input name -> its work items' (start, stop, state), sorted, from one listing of out/parts/."""
        found: Dict[str, List[Tuple[int, int, str]]] = {}
        try:
            with os.scandir(self.parts) as entries:
                names = [entry.name for entry in entries]
        except FileNotFoundError:
            return found
        for name in names:
            match = _PIECE.fullmatch(name)
            if match:
                found.setdefault(match[1], []).append((int(match[2]), int(match[3]), match[4] or "done"))
        return {name: sorted(items) for name, items in found.items()}

    def out_names(self) -> List[str]:
        """The names in out/ (one listing)."""
        try:
            with os.scandir(self.out) as entries:
                return [entry.name for entry in entries]
        except FileNotFoundError:
            return []

    def sidecar_names(self, listed: Optional[List[str]] = None) -> List[str]:
        """The names of the inputs with a sidecar in out/ (`listed`: out/'s names, else one listing of it)."""
        return [name[: -len(_SIDECAR)] for name in (self.out_names() if listed is None else listed)
                if name.endswith(_SIDECAR)]

    def has_sidecars(self) -> bool:
        """Whether out/ holds a fingerprint sidecar (one listing of out/, stopped at the first)."""
        try:
            with os.scandir(self.out) as entries:
                return any(entry.name.endswith(_SIDECAR) for entry in entries)
        except FileNotFoundError:
            return False

    def make(self) -> "RunDir":
        for path in (self.root, self.out, self.logs, self.stats, self.claims):
            path.mkdir(parents=True, exist_ok=True)
        return self


def renamed(item: Item, name: str) -> "Item | None":
    """The item of input `name` laid out as `item` is (out/<input>... named by the input; None for per_tile's
    by_rank outputs, named by rank), with the input `name` beside item's."""
    base = item.input.name
    if not (item.output.name.startswith(base) and item.ledger.name.startswith(base)):
        return None
    return Item(item.input.with_name(name), item.output.with_name(name + item.output.name[len(base):]),
                item.ledger.with_name(name + item.ledger.name[len(base):]))


def run_dir_of(job_file: Path) -> RunDir:
    return RunDir(Path(job_file).resolve().parent)


def in_a_run(path: Path, root: Path, seen: Dict[Path, bool]) -> bool:
    """Whether `path` lies in a run directory (a folder with the runner's job.yaml and an out/: its outputs, work
    items, stats, logs) below `root`, the folder a glob starts from (a run directory given as the root itself is the user's
    choice). `seen` caches the answer per folder over one listing: one stat per folder, not per file."""
    return _of_a_run(path.parent, root, seen)


def _of_a_run(folder: Path, root: Path, seen: Dict[Path, bool]) -> bool:
    if folder == root or root not in folder.parents:
        return False
    if folder not in seen:
        run = RunDir(folder)
        seen[folder] = _is_a_run(run) or _of_a_run(folder.parent, root, seen)
    return seen[folder]


def _is_a_run(run: "RunDir") -> bool:
    """A runner's run directory, not a folder of another pipeline that also keeps a job.yaml and an out/ (its
    inputs must not be dropped): the job.yaml is the runner's (it names the run's rerun epoch)."""
    if not (run.job_file.is_file() and run.out.is_dir()):
        return False
    try:
        return re.search(r"^rerun_epoch:", run.job_file.read_text(errors="replace"), re.MULTILINE) is not None
    except OSError:
        return False
