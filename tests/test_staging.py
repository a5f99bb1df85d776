"""staging=mpi_bcast: a real `mpiexec -n 3` broadcast of a folder into three node-local targets."""

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

from runner.staging import MANIFEST, crc_of, staged_path


def _folder(root: Path) -> Path:
    src = root / "model src"
    (src / "sub dir").mkdir(parents=True)
    (src / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (src / "model.safetensors").write_bytes(os.urandom(5 * 2**20 // 2))  # 2.5 MiB: three 1 MiB chunks
    (src / "sub dir" / "tokenizer.json").write_text("{}" * 1000)
    (src / "empty.txt").write_bytes(b"")
    return src


def _bcast(src: Path, target: str, n: int = 3):
    argv = ["mpiexec", "-n", str(n), sys.executable, "-m", "runner.staging", "--source", str(src), "--target", target,
            "--chunk-mib", "1"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted((json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")), key=lambda r: r["rank"])


def test_broadcast_into_three_targets_with_equal_checksums_then_reuse(tmp_path):
    src = _folder(tmp_path)
    results = _bcast(src, str(tmp_path / "node{rank}" / "model"))
    assert [r["rank"] for r in results] == [0, 1, 2] and not any(r["reused"] for r in results)
    assert results[0]["bytes"] == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert results[0]["gib_per_s"] > 0
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    for rank in range(3):
        target = tmp_path / f"node{rank}" / "model"
        assert sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file() and p.name != MANIFEST) == files
        for rel in files:
            assert crc_of(target / rel) == zlib.crc32((src / rel).read_bytes())
    again = _bcast(src, str(tmp_path / "node{rank}" / "model"))
    assert all(r["reused"] for r in again)


def test_a_corrupted_copy_is_staged_again(tmp_path):
    src = _folder(tmp_path)
    _bcast(src, str(tmp_path / "node{rank}" / "model"), n=2)
    broken = tmp_path / "node1" / "model" / "model.safetensors"
    broken.write_bytes(b"truncated")
    again = _bcast(src, str(tmp_path / "node{rank}" / "model"), n=2)
    assert not any(r["reused"] for r in again)
    assert broken.read_bytes() == (src / "model.safetensors").read_bytes()


def test_staged_path_is_stable_and_distinct_per_source():
    assert staged_path("/lus/models/Llama", "/tmp/m") == staged_path("/lus/models/Llama", "/tmp/m")
    assert staged_path("/lus/a/Llama", "/tmp/m") != staged_path("/lus/b/Llama", "/tmp/m")
    assert staged_path("/lus/a/Llama", "/tmp/m").name.startswith("Llama-")
