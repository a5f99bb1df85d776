"""python -m runner.progress RUN: how far a job has got, read from its run folder alone (RUN: the folder or its
job.yaml). It works while the job runs, e.g. from a login node, and after the job stopped.

For each input file it counts the distinct answered lines: from the finished output's sidecar, else from the
file's ledger; a file appended or edited since its output was finished is not finished. A finished file whose
input has the size and mtime it was answered with is not read (its lines are its records). It prints the
unfinished files and the total.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

from runner import job
from runner.errors import RunnerError
from runner.fingerprint import answered_as_it_is, read_sidecar
from runner.mode import mode_of
from runner.readers import InputReader, reader_of
from runner.record_log import scan
from runner.run_dir import Item, RunDir

_LISTED = 20


@dataclass(frozen=True)
class FileProgress:
    name: str
    # distinct lines with a record (a line answered twice counts once)
    answered: int
    lines: int
    finished: bool
    # lines whose newest record is an ERROR (a rerun retries them)
    errors: int = 0


def _file_progress(item: Item, reader: InputReader, partial: Callable[[Item], List[Path]]) -> FileProgress:
    sidecar = read_sidecar(item.ledger)
    if answered_as_it_is(item, sidecar):  # its lines are its records: the input is not read again (one stat)
        return FileProgress(item.input.name, sidecar.answered, sidecar.answered, True, len(sidecar.errors))
    lines = reader.count(item.input) if item.input.exists() else 0
    if item.output.exists() and (sidecar is None or sidecar.answered is None):  # a runner without sidecars
        return FileProgress(item.input.name, lines, lines, True)
    if item.output.exists():  # its input appended, edited or gone since it was answered: not finished
        return FileProgress(item.input.name, sidecar.answered, lines, False, len(sidecar.errors))
    newest = {}
    for path in partial(item):  # the ledger, or a file's work items (per_tile spread over its ranks)
        try:
            newest.update(scan(path))
        except FileNotFoundError:  # joined meanwhile: counted by a later look
            continue
    return FileProgress(item.input.name, len(newest), lines, False, sum(newest.values()))


def progress(run: RunDir) -> List[FileProgress]:
    """Every input file's progress: a finished output's counts come from its sidecar (one small read), a ledger's
    from its distinct lines."""
    cfg = job.read(run.job_file)  # untyped: a job file of an older runner version is read too
    reader, mode = reader_of(cfg), mode_of(cfg)
    return [_file_progress(item, reader, lambda item: mode.partial_outputs(run, item)) for item in mode.work_items(run)]


def describe(run: RunDir, files: List[FileProgress]) -> str:
    answered, lines = sum(f.answered for f in files), sum(f.lines for f in files)
    finished = sum(f.finished for f in files)
    share = 100.0 * answered / lines if lines else 100.0
    errors = sum(f.errors for f in files)
    retry = f", {errors} with an ERROR record (a rerun retries them)" if errors else ""
    out = [f"{run.root}: {finished} of {len(files)} files finished, {answered}/{lines} lines done ({share:.1f}%)"
           f"{retry}"]
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
    try:
        print(describe(run, progress(run)), flush=True)
    except RunnerError as e:  # e.g. a job file whose layout this runner refuses
        print(f"{run.root}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
