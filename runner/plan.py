"""The pre-flight plan (`plan=true`, and the dry run): what a launch of this config would answer, how it is
spread over the workers and about how long generation takes, from the launch's own checks (runner.preflight:
the model's tokenizer) and the mode's work items. Nothing is started, written or locked for it.
"""

import math
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from runner.preflight import Report
from runner.run_dir import RunDir
from runner.spread import previous_rate
from runner.tally import _duration
from runner.work_items import describe as describe_shares

_FILES_SHOWN = 5


def describe(cfg: DictConfig, run: RunDir, files: List[Path], report: Optional[Report], planned) -> str:
    """The plan as lines of text; `planned` is the mode's plan (per_tile spread's work items) or None."""
    max_tokens = int(cfg.sampling.get("max_tokens") or 16)
    shown = ", ".join(p.name for p in files[:_FILES_SHOWN]) + (" ..." if len(files) > _FILES_SHOWN else "")
    out = [f"plan for {run.root} (nothing started)", f"  files: {len(files)} in {cfg.input.path} ({shown})"]
    out += _tokens(report, max_tokens)
    todo = planned.lines if planned is not None else (report.lines if report is not None else None)
    if planned is not None:
        head, *ranks = describe_shares(planned.shares)
        out += [f"  work: {head}", *(f"  {line}" for line in ranks)]
        out += [f"  a launch is refused: {why} (rerun=changed answers it again from the start)"
                for why in planned.refused]
    if todo is not None:
        out.append(f"  output tokens at sampling.max_tokens={max_tokens}: at most {todo * max_tokens} "
                   f"({todo} lines to answer)")
        out.append("  " + _estimate(cfg, run, todo * max_tokens))
    return "\n".join(out)


def _tokens(report: Optional[Report], max_tokens: int) -> List[str]:
    if report is None:
        return ["  prompt tokens: unknown (no tokenizer or max_model_len for model.path here)"]
    return [f"  lines: {report.lines}; prompt tokens: {report.prompt_tokens} (longest prompt {report.longest} "
            f"tokens, {report.longest_at or '-'})",
            f"  lines over the context: {report.count} (prompt + sampling.max_tokens={max_tokens} > "
            f"max_model_len={report.max_model_len})"]


def _estimate(cfg: DictConfig, run: RunDir, output_tokens: int) -> str:
    """Generation time at the throughput the user gave (plan_tokens_per_s), else at the run's last summary's."""
    given = float(cfg.get("plan_tokens_per_s") or 0)
    rate, source = (given, "plan_tokens_per_s") if given > 0 else (previous_rate(run), "the last summary.json")
    if not rate:
        return "estimate: give plan_tokens_per_s=<output tokens/s of the whole job> (no earlier summary.json)"
    return (f"estimate: about {_duration(math.ceil(output_tokens / rate))} of generation at {rate:g} output "
            f"tokens/s ({source}), engine start not included")
