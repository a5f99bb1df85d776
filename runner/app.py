"""From a composed config to a launched job: resolve paths, build the model, validate, write the job file."""

import logging
import os
from pathlib import Path
from typing import Tuple

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner import (engine, job, launch_pass, limits, models, outputs, plan, preflight, readers, renamed, rerun,
                    run_lock, vllm_names)
from launchers.base import launcher_of
from runner.errors import ConfigError
from runner.mode import mode_of
from runner.staging import staging_of
from runner.job import RunDir
from runner.run_lock import RunLock

log = logging.getLogger(__name__)


def check_vllm_names(cfg: DictConfig) -> None:
    """Engine and sampling keys must be vLLM's own names, engine values of the types vLLM declares, and the
    sampling values ones vLLM's SamplingParams accepts; report the first group that is not."""
    known = vllm_names.known_names()
    for where, keys, names in (
        ("model.engine", cfg.model.engine.keys(), known["engine"]),
        ("cluster.engine", cfg.cluster.engine.keys(), known["engine"]),
        ("engine", cfg.engine.keys(), known["engine"]),
        ("sampling", cfg.sampling.keys(), known["sampling"]),
    ):
        unknown = sorted(set(keys) - names)
        if unknown:
            raise ConfigError(f"{where} has keys vLLM does not know: {unknown}; use vLLM's own argument names")
    wrong = [problem for where in ("model.engine", "cluster.engine", "engine")
             for problem in vllm_names.engine_type_problems(where, OmegaConf.select(cfg, where), known["engine_types"])]
    if wrong:
        raise ConfigError(f"{'; '.join(wrong)}: fix the value (vLLM's EngineArgs types)")
    problem = vllm_names.sampling_problem(OmegaConf.to_container(cfg.sampling))
    if problem:
        raise ConfigError(problem)


def check_missing(cfg: DictConfig) -> None:
    """Every `???` of the chosen options must be given (e.g. launcher=pbs needs a queue and an account)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        given = " ".join(f"{key}=..." for key in missing)
        raise ConfigError(f"{', '.join(missing)} must be set for this config: add {given} to the command line")


def resolve(cfg: DictConfig) -> Tuple[DictConfig, launch_pass.Inputs]:
    """A copy of cfg with absolute input paths and a loadable model path, checked against the inputs; and what
    the launch's one pass over the inputs found (the pre-flight report of the lines too long for the model, the
    spread index of each file)."""
    check_missing(cfg)
    limits.check(cfg)  # on the typed config: the copy below no longer knows the schemas
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    launcher_of(cfg), staging_of(cfg)  # a class that cannot be built fails before anything is made
    # absolute (the workers' working directory is not this one's), a glob's wildcards kept
    cfg.input.path = os.path.abspath(os.path.expanduser(cfg.input.path))
    mode, reader = mode_of(cfg), readers.reader_of(cfg)
    mode.resolve()
    check_vllm_names(cfg)  # before the mode reads engine values (the layout's tensor_parallel_size)
    files = mode.input_files()
    mode.check(files)
    problem = launcher_of(cfg).problem()  # after the layout's own checks (its count of engines)
    if problem:
        raise ConfigError(problem)
    cfg.output.format = outputs.format_of(cfg).name  # job.yaml names what is written (`auto` resolved)
    outputs.check(cfg)
    cfg.engine = engine.engine_args(cfg)  # job.yaml shows the engine arguments as vLLM receives them
    cfg.model.path = models.ensure_model(cfg.model)  # before the inputs' pass: it counts with the model's tokenizer
    cfg.model.source = "path"
    # finished inputs a rerun leaves alone are not read (their sidecars and stats tell it)
    run = RunDir(Path(HydraConfig.get().runtime.output_dir))
    kept = rerun.left_alone(cfg, run, mode.work_items(run))
    files = [path for path in files if path not in kept]
    found = launch_pass.read_inputs(cfg, reader, files)  # each input read once: validated, counted, indexed
    problem = reader.check(files)  # the template and the ids against the files' fields
    if problem:
        raise ConfigError(problem)
    preflight.judge(cfg, found.report)  # lines too long: refused under mode.on_too_long=error
    return cfg, found


def show_plan(resolved: DictConfig, found: launch_pass.Inputs) -> None:
    """plan=true: print what a launch would do; nothing is made, locked or started."""
    run = RunDir(Path(HydraConfig.get().runtime.output_dir))
    previous = rerun.previous_job(resolved, run)
    resolved.rerun_epoch = rerun.check_launch(resolved, run, previous)
    mode = mode_of(resolved)
    planned = mode.prepare(run, dry=True, indexes=found.indexes)
    print(plan.describe(resolved, run, mode.input_files(), found.report, planned), flush=True)


def launch(cfg: DictConfig) -> None:
    """Check everything, then make the run directory: a refused config leaves no run directory behind."""
    resolved, found = resolve(cfg)
    report = found.report
    if resolved.plan:
        return show_plan(resolved, found)
    run = RunDir(Path(HydraConfig.get().runtime.output_dir)).make()
    lock = RunLock(run.root)
    lock.acquire(run_lock.holder(), force=resolved.force_lock)  # before job.yaml, which a live run reads
    try:
        previous = rerun.previous_job(resolved, run)
        resolved.rerun_epoch = rerun.check_launch(resolved, run, previous)  # refuses before job.yaml is rewritten
        mode = mode_of(resolved)
        mode.after_run(run)  # finished work items joined first: an input renamed before its join is adopted too
        renamed.adopt_renamed(resolved, run, mode.work_items(run), {k: v.print for k, v in found.indexes.items()})
        planned = mode.prepare(run, indexes=found.indexes)  # per_tile: the ranks' work items (work.json)
        if resolved.dry_run:
            print(plan.describe(resolved, run, mode.input_files(), report, planned), flush=True)
        job_file = job.write(resolved, run)
        preflight.write_for_ranks(report, run.too_long_file)
        log.info("run directory %s", run.root)
        loaded = job.load(job_file)
        launcher_of(loaded).launch(job_file, lock)
    finally:
        lock.release()  # a local run ended; a batch job's lock was handed to the job (nothing left here)
