"""The seam of the mode group: what a worker process of a job runs, how many run per node, which device and
which input files each gets. A new mode is a subclass (in its own module), its schema in runner/schema/mode.py and
its YAML in conf/mode/; the rest of the runner asks the mode, never its name.
"""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Optional, Tuple

from omegaconf import DictConfig


if TYPE_CHECKING:
    from runner.readers import Entry
    from runner.run_dir import Item, RunDir
    from runner.stats import WorkerStats
    from runner.topology import Placement
    from runner.work_items import FileIndex


class Mode(ABC):
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    @abstractmethod
    def procs_per_node(self) -> int:
        """Worker processes the launcher starts on each node."""

    @abstractmethod
    def input_files(self) -> List[Path]:
        """The job's input files, in order."""

    @abstractmethod
    def work_items(self, run: "RunDir") -> List["Item"]:
        """Every input file with its finished output and its ledger."""

    @abstractmethod
    def run(self, run: "RunDir", placement: "Placement", model_path: str, stats: "WorkerStats") -> "WorkerStats":
        """One worker process's share of the job; fills `stats` and returns them (the worker writes them, also
        when this raises)."""

    def resolve(self) -> None:
        """Make the mode's own paths absolute (the launching host's working directory is not the workers')."""

    def check(self, files: List[Path]) -> None:
        """Refuse, with a ConfigError, a config that cannot run on these inputs."""

    def spreads_inputs(self) -> bool:
        """Whether `prepare` cuts the input files into line ranges (the launch's pass then indexes them)."""
        return False

    def prepare(self, run: "RunDir", dry: bool = False, indexes: Optional[Dict[str, "FileIndex"]] = None):
        """At launch, after the rerun checks and before job.yaml is written: lay out the work of the workers
        (`dry`: plan it only, writing nothing; `indexes`: the input files' indexes from the launch's pass over
        them, by file name); returns the plan, or None when the mode has none."""
        return None

    def after_run(self, run: "RunDir") -> None:
        """Once every worker ended (the job's summary step): bring the outputs together."""

    def partial_outputs(self, run: "RunDir", item: "Item") -> List[Path]:
        """The files holding an unfinished item's records so far (runner.progress counts them)."""
        return [item.ledger] if item.ledger.exists() else []

    def device_env(self, placement: "Placement") -> Dict[str, str]:
        """The variables that pin a worker to its devices; set before vLLM is imported."""
        return {}

    def prompts(self, path: Path, entries: Optional[Iterable["Entry"]] = None) -> Iterator[Tuple[int, str]]:
        """(number, prompt text) of each record of an input file that will be sent (pre-flight counts them; a
        chat's text is its messages' contents), from `entries` (the launch's pass over the file), else read here.
        Left out: a malformed record (it gets a record of its own), and one with its own max_tokens (the check
        counts sampling.max_tokens; vLLM judges it when it is sent)."""
        from runner.readers import reader_of

        for entry in reader_of(self.cfg).read(path) if entries is None else entries:
            if not entry.error and "max_tokens" not in entry.request.sampling:
                request = entry.request
                text = request.prompt if request.messages is None else "\n".join(
                    str(m.get("content") or "") for m in request.messages)
                yield entry.number, text


def mode_of(cfg: DictConfig) -> Mode:
    """The job's mode option (its `_target_`), built with the job's config."""
    from runner.options import build

    return build(cfg, "mode", Mode)
