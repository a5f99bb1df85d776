"""Summarise what benchmarks/device/profile_legs.sh sampled beside a benchmark run, per leg.

    python3 benchmarks/profile_summary.py RESULTS.json PROFILE_DIR > summary.json

GPU: utilisation and memory over each leg's generation window (from its started_at, engine_start_s and
generate_s; 2 s trimmed at each end). py-spy: for each profiled process, its sample count and the functions it
spent most samples in (self time).
"""

import csv
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path


def gpu_samples(path: Path) -> list:
    rows = []
    for row in csv.reader(path.open()):
        if len(row) < 3:
            continue
        try:
            stamp = time.mktime(time.strptime(row[0].strip().split(".")[0], "%Y/%m/%d %H:%M:%S"))
            rows.append((stamp + float("0." + row[0].strip().split(".")[1]), float(row[1]), float(row[2])))
        except (ValueError, IndexError):
            continue
    return rows


def gpu_window(samples: list, leg: dict) -> dict:
    start = leg["started_at"] + leg["engine_start_s"] + 2
    end = leg["started_at"] + leg["engine_start_s"] + leg["generate_s"] - 2
    util = [u for t, u, _ in samples if start <= t <= end]
    mem = [m for t, _, m in samples if start <= t <= end]
    if not util:
        return {}
    return {"samples": len(util), "util_mean": round(statistics.mean(util), 1),
            "util_median": statistics.median(util), "util_below_90_share": round(sum(u < 90 for u in util) / len(util), 3),
            "mem_used_mib_max": max(mem)}


def spy_summary(path: Path, top: int = 8) -> dict:
    leaf, total = Counter(), 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        leaf[frames[-1]] += n
    return {"file": path.name, "samples": total,
            "top_self": [(f, round(n / max(total, 1), 4)) for f, n in leaf.most_common(top)]}


def main(argv) -> int:
    results, folder = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    samples = gpu_samples(folder / "gpu.csv") if (folder / "gpu.csv").exists() else []
    legs = [{"round": leg["round"], "leg": leg["leg"], "gpu": gpu_window(samples, leg)}
            for leg in results["legs"] if "error" not in leg and "started_at" in leg]
    spies = [spy_summary(p) for p in sorted(folder.glob("spy-*.txt"))]
    print(json.dumps({"legs": legs, "py_spy": spies}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
