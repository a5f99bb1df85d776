"""The run's summary, from the workers' stats (runner.stats) and the outputs: lines answered, this run's tokens
and rates, per worker and in total.

`prompts` counts the distinct answered lines of the outputs as they are now (runner.progress: a line answered
twice counts once), `lines` the lines of the inputs now, `resumed` the answered lines that came from an earlier
run, `error_lines` the lines whose record is an ERROR (a rerun retries them). Errors, tokens and times are of
this run's workers only: stats/*.json of an earlier attempt are not summed in.

The headline rate is generation tokens/s: each worker's output tokens over its generation time, summed over
the workers (they generate side by side, so the job's rate is the sum of theirs). The wall-clock rate (engine
start, loading and waiting included) is given beside it as `wall_tokens_per_s`.
"""

import logging
import sys
from pathlib import Path
from typing import Dict, List

from runner import atomic
from runner.errors import RunnerError
from runner.run_dir import RunDir, run_dir_of
from runner.stats import this_attempt

log = logging.getLogger(__name__)


def _rate(tokens: float, seconds: float) -> float:
    return round(tokens / seconds, 1) if seconds > 0 else 0.0


def summarize(run: RunDir, wall_s: float = 0.0) -> Dict:
    """Gather this attempt's stats and the outputs' counts into summary.json; wall_s is the job's wall time
    where the launcher knows it."""
    from runner.job import read
    from runner.mode import mode_of
    from runner.progress import progress

    mode_of(read(run.job_file)).after_run(run)  # e.g. per_tile's work items joined into one output each
    workers = this_attempt(run)
    files = progress(run)
    keys = ("answered", "errors", "prompt_tokens", "output_tokens")
    total = {key: sum(getattr(w, key) for w in workers) for key in keys}
    prompts = sum(f.answered for f in files)
    wall = wall_s or max((w.wall_s for w in workers), default=0.0)
    per_worker = [{**w.to_json(), "output_tokens_per_s": _rate(w.output_tokens, w.generate_s)} for w in workers]
    summary = {
        "prompts": prompts, "lines": sum(f.lines for f in files), "resumed": max(prompts - total["answered"], 0),
        "error_lines": sum(f.errors for f in files), **total,
        "workers": len(workers),
        "wall_s": round(wall, 2),
        "generate_s": max((w.generate_s for w in workers), default=0.0),
        "generation_tokens_per_s": round(sum(w["output_tokens_per_s"] for w in per_worker), 1),
        "wall_tokens_per_s": _rate(total["output_tokens"], wall),
        "per_worker": per_worker,
    }
    atomic.write_json(run.summary_file, summary, indent=1)
    return summary


def describe(summary: Dict) -> str:
    s = summary
    lines = [
        f"{s['prompts']}/{s['lines']} lines answered ({s['resumed']} from an earlier run, {s['error_lines']} "
        f"with an ERROR record); this run: {s['answered']} answered, {s['errors']} errors, {s['output_tokens']} "
        f"output tokens, {s['generation_tokens_per_s']} generation tok/s over {s['workers']} workers "
        f"(wall clock: {s['wall_tokens_per_s']} tok/s over {s['wall_s']} s, engine start included)"
    ]
    for w in s["per_worker"]:
        lines.append(
            f"  {w['name']}: {w.get('answered', 0)} answered, {w.get('output_tokens', 0)} tokens, "
            f"{w['output_tokens_per_s']} generation tok/s over {w.get('generate_s', 0)} s "
            f"(engine start {w.get('engine_start_s', 0)} s)"
        )
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    """python -m runner.summary JOB_FILE: summarize a finished run (the last step of a batch job)."""
    run = run_dir_of(Path(argv[0]))
    try:
        print(describe(summarize(run)), flush=True)
    except RunnerError as e:
        print(f"{run.root}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
