"""python -m runner.progress RUN: how far a job has got, read from its run folder alone (RUN: the folder or its
job.yaml). It works while the job runs, e.g. from a login node, and after the job stopped.

For each input file it counts the answered lines: all of them once the output is finished, else the lines in the
file's ledger. It prints the unfinished files and the total.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from runner.inputs import count_lines
from runner.job import RunDir
from runner.work_queue import ledger_path, list_inputs, output_path

_LISTED = 20


@dataclass(frozen=True)
class FileProgress:
    name: str
    answered: int
    lines: int
    finished: bool


def _ledger_lines(path: Path) -> int:
    """Whole records in a ledger (a torn last line is not counted)."""
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _work_items(run: RunDir):
    """(input file, finished output, ledger) for every input of the job."""
    cfg = OmegaConf.load(run.job_file)  # untyped: a job file of an older runner version is read too
    if cfg.mode.name == "per_tile":
        from runner.per_tile import input_paths, rank_outputs

        for rank, path in enumerate(input_paths(cfg, cfg.nodes * cfg.cluster.ranks_per_node)):
            yield (path, *rank_outputs(run.out, rank))
    else:
        for path in list_inputs(cfg):
            yield path, output_path(run.out, path), ledger_path(run.out, path)


def progress(run: RunDir) -> List[FileProgress]:
    files = []
    for path, finished, ledger in _work_items(run):
        lines = count_lines(path) if path.exists() else 0
        done = finished.exists()
        files.append(FileProgress(path.name, lines if done else min(_ledger_lines(ledger), lines), lines, done))
    return files


def describe(run: RunDir, files: List[FileProgress]) -> str:
    answered, lines = sum(f.answered for f in files), sum(f.lines for f in files)
    finished = sum(f.finished for f in files)
    share = 100.0 * answered / lines if lines else 100.0
    out = [f"{run.root}: {finished} of {len(files)} files finished, {answered}/{lines} lines done ({share:.1f}%)"]
    unfinished = [f for f in files if not f.finished]
    for f in unfinished[:_LISTED]:
        out.append(f"  {f.name}: {f.answered}/{f.lines}")
    if len(unfinished) > _LISTED:
        out.append(f"  ... and {len(unfinished) - _LISTED} more unfinished files")
    return "\n".join(out)


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m runner.progress RUN_DIR_OR_JOB_YAML", file=sys.stderr)
        return 2
    path = Path(argv[0]).resolve()
    run = RunDir(path if path.is_dir() else path.parent)
    if not run.job_file.is_file() or (not path.is_dir() and path != run.job_file):
        print(f"{argv[0]} is neither a run folder (outputs/runs/<name>) nor its job.yaml", file=sys.stderr)
        return 2
    print(describe(run, progress(run)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
