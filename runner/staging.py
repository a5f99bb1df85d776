"""staging=mpi_bcast: copy a model folder to node-local storage on every node with MPI broadcasts.

Run one process per node (``mpiexec -ppn 1 python -m runner.staging JOB_FILE``). Rank 0 reads each file
of the folder once from the shared filesystem and broadcasts it in chunks; every rank writes it under
a temporary folder, checks each file's CRC-32 against rank 0's, writes a manifest and renames the folder
into place. A folder whose manifest matches the source listing and whose files still verify is reused.
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import List, Optional, Tuple

from omegaconf import DictConfig

log = logging.getLogger(__name__)

MANIFEST = ".runner-manifest.json"
Listing = List[Tuple[str, int, int]]  # (relative path, bytes, mtime ns)


def staged_path(source: str, target_dir: str) -> Path:
    """Where a model folder lands on each node: target_dir/<name>-<hash of the source path>."""
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:10]
    return Path(target_dir) / f"{Path(source).name}-{digest}"


class Staging(ABC):
    """The seam of the staging group: how the weights reach the nodes before the workers start."""

    # started as `python -m MODULE JOB_FILE` on one process per node before the workers; None: no stage step
    module: Optional[str] = None

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    @abstractmethod
    def model_path_for_workers(self) -> str:
        """The model path ranks and servers load."""


class NoStaging(Staging):
    """staging=none: the workers read model.path where it is."""

    def model_path_for_workers(self) -> str:
        return self.cfg.model.path


class MpiBcastStaging(Staging):
    """staging=mpi_bcast: a stage step broadcasts the folder to every node's staging.target_dir."""

    module = "runner.staging"

    def model_path_for_workers(self) -> str:
        return str(staged_path(self.cfg.model.path, self.cfg.staging.target_dir))


def listing_of(folder: Path) -> Listing:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def crc_of(path: Path, chunk: int = 64 << 20) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def is_staged(target: Path, listing: Listing) -> bool:
    """True when target holds a verified copy of exactly this listing."""
    manifest = target / MANIFEST
    if not manifest.is_file():
        return False
    recorded = json.loads(manifest.read_text())
    if [tuple(entry) for entry in recorded["listing"]] != [tuple(entry) for entry in listing]:
        return False
    return all(crc_of(target / rel) == crc for rel, crc in recorded["crc"].items())


def _chunks(size: int, chunk: int):
    for offset in range(0, size, chunk):
        yield min(chunk, size - offset)


def _bcast_file(comm, rel: str, size: int, source: Optional[Path], tmp: Optional[Path], chunk: int) -> int:
    """Broadcast one file from rank 0; ranks given a tmp folder write it there. Returns rank 0's CRC-32."""
    from mpi4py import MPI

    buf = bytearray(min(chunk, size)) if size else bytearray(0)
    reader = open(source / rel, "rb") if comm.rank == 0 else None
    writer = None
    if tmp is not None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        writer = open(tmp / rel, "wb")
    crc = 0
    for n in _chunks(size, chunk):
        view = memoryview(buf)[:n]
        if reader:
            reader.readinto(view)
            crc = zlib.crc32(view, crc)
        comm.Bcast([view, n, MPI.BYTE], root=0)
        if writer:
            writer.write(view)
    for f in (reader, writer):
        if f:
            f.close()
    return comm.bcast(crc, root=0)


def broadcast_folder(comm, source: Optional[Path], target: Path, chunk_bytes: int) -> dict:
    """Collective over comm: every rank ends with a verified copy of rank 0's `source` at `target`."""
    listing = comm.bcast(listing_of(source) if comm.rank == 0 else None, root=0)
    same_place = comm.rank == 0 and source.resolve() == target.resolve()
    need = not same_place and not is_staged(target, listing)
    started = time.monotonic()
    if not comm.allreduce(need, op=_lor()):
        return {"reused": True, "bytes": 0, "gib": 0.0, "seconds": 0.0, "gib_per_s": 0.0}
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}") if need else None
    crcs = {rel: _bcast_file(comm, rel, size, source, tmp, chunk_bytes)
            for rel, size, _ in listing}
    if need:
        _finish(tmp, target, listing, crcs)
    comm.Barrier()
    seconds = time.monotonic() - started
    total = sum(size for _, size, _ in listing)
    gib = total / 2**30
    return {"reused": False, "bytes": total, "gib": round(gib, 3), "seconds": round(seconds, 3),
            "gib_per_s": round(gib / seconds, 3)}


def _lor():
    from mpi4py import MPI

    return MPI.LOR


def _finish(tmp: Path, target: Path, listing: Listing, crcs: dict) -> None:
    bad = [rel for rel, crc in crcs.items() if crc_of(tmp / rel) != crc]
    if bad:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"staged copy of {bad} does not match its source checksum; rerun the job")
    (tmp / MANIFEST).write_text(json.dumps({"listing": listing, "crc": crcs}))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def node_leaders(world):
    """A communicator of one process per node (the first on each), or None on the other processes."""
    from mpi4py import MPI

    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    leaders = world.Split(0 if node.rank == 0 else MPI.UNDEFINED, world.rank)
    return None if leaders == MPI.COMM_NULL else leaders


def stage_job(job_file: Path) -> None:
    """Collective over MPI.COMM_WORLD, whatever the processes per node: one per node copies."""
    from mpi4py import MPI

    from runner import job

    cfg = job.load(job_file)
    target = Path(MpiBcastStaging(cfg).model_path_for_workers())
    leaders = node_leaders(MPI.COMM_WORLD)
    if leaders is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        result = broadcast_folder(leaders, Path(cfg.model.path), target, cfg.staging.chunk_mib << 20)
        if leaders.rank == 0:
            log.info("staged %s to %s on %d node(s): %s", cfg.model.path, target, leaders.size, result)
            job.run_dir_of(job_file).staging_file.write_text(json.dumps({"nodes": leaders.size, **result}))
    MPI.COMM_WORLD.Barrier()


def main(argv: List[str]) -> int:
    """python -m runner.staging JOB_FILE | --source DIR --target DIR [--chunk-mib N] ({rank} in target allowed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m runner.staging")
    parser.add_argument("job_file", nargs="?")
    parser.add_argument("--source")
    parser.add_argument("--target")
    parser.add_argument("--chunk-mib", type=int, default=1024)
    args = parser.parse_args(argv)
    if args.job_file:
        stage_job(Path(args.job_file))
        return 0
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    target = Path(args.target.format(rank=comm.rank))
    result = broadcast_folder(comm, Path(args.source) if comm.rank == 0 else None, target, args.chunk_mib << 20)
    # one write per rank, so lines of several ranks do not interleave on mpiexec's stdout
    sys.stdout.write(json.dumps({"rank": comm.rank, "target": str(target), **result}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def staging_of(cfg: DictConfig) -> Staging:
    """The job's staging option (its `_target_`), built with the job's config."""
    from runner.options import build

    return build(cfg, "staging", Staging)
