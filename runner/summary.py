"""Per-rank statistics and the run's summary: prompts, tokens, wall time, tokens/s per rank and in total.

`prompts` counts every answered line of the outputs, `resumed` those answered by an earlier run; errors and
token counts (and so the rates) are of this run's answers only.
"""

import json
import logging
import sys
from pathlib import Path
from typing import Dict, List

from runner.job import RunDir, run_dir_of

log = logging.getLogger(__name__)


def write_stats(run: RunDir, name: str, stats: Dict) -> None:
    """Record one rank's (or host's) numbers as stats/<name>.json."""
    run.stats.mkdir(parents=True, exist_ok=True)
    path = run.stats / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats, indent=1))
    tmp.replace(path)


def _rate(tokens: float, seconds: float) -> float:
    return round(tokens / seconds, 1) if seconds > 0 else 0.0


def summarize(run: RunDir, wall_s: float = 0.0) -> Dict:
    """Gather stats/*.json into summary.json; wall_s is the job's wall time where the launcher knows it."""
    workers: List[Dict] = [json.loads(p.read_text()) for p in sorted(run.stats.glob("*.json"))]
    keys = ("prompts", "resumed", "errors", "prompt_tokens", "output_tokens")
    total = {key: sum(w.get(key, 0) for w in workers) for key in keys}
    wall = wall_s or max((w.get("wall_s", 0.0) for w in workers), default=0.0)
    summary = {
        **total,
        "workers": len(workers),
        "wall_s": round(wall, 2),
        "output_tokens_per_s": _rate(total["output_tokens"], wall),
        "per_worker": [
            {**w, "output_tokens_per_s": _rate(w.get("output_tokens", 0), w.get("generate_s", 0.0))} for w in workers
        ],
    }
    run.summary_file.write_text(json.dumps(summary, indent=1))
    return summary


def describe(summary: Dict) -> str:
    lines = [
        f"{summary['prompts']} prompts ({summary['resumed']} from an earlier run), {summary['errors']} errors, "
        f"{summary['output_tokens']} output tokens "
        f"in {summary['wall_s']} s: {summary['output_tokens_per_s']} output tokens/s "
        f"over {summary['workers']} workers"
    ]
    for w in summary["per_worker"]:
        lines.append(
            f"  {w['name']}: {w.get('prompts', 0)} prompts, {w.get('output_tokens', 0)} tokens, "
            f"{w['output_tokens_per_s']} tok/s (engine start {w.get('engine_start_s', 0)} s)"
        )
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    """python -m runner.summary JOB_FILE: summarize a finished run (the last step of a batch job)."""
    run = run_dir_of(Path(argv[0]))
    print(describe(summarize(run)), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
