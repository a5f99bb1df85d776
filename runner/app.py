"""From a composed config to a launched job: resolve paths, build the model, validate, write the job file."""

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner import inputs, job, models, run_lock, vllm_names
from runner.errors import ConfigError
from runner.job import RunDir
from runner.run_lock import RunLock

log = logging.getLogger(__name__)


def input_files(cfg: DictConfig) -> list[Path]:
    """The input files the job will read, in order."""
    if cfg.mode.name == "per_tile":
        from runner.per_tile import input_paths

        return input_paths(cfg, cfg.nodes * cfg.cluster.ranks_per_node)
    from runner.work_queue import list_inputs

    return list_inputs(cfg)


def check_vllm_names(cfg: DictConfig) -> None:
    """Engine and sampling keys must be vLLM's own names; report the ones that are not."""
    known = vllm_names.known_names()
    for where, keys, names in (
        ("model.engine", cfg.model.engine.keys(), known["engine"]),
        ("cluster.engine", cfg.cluster.engine.keys(), known["engine"]),
        ("sampling", cfg.sampling.keys(), known["sampling"]),
    ):
        unknown = sorted(set(keys) - names)
        if unknown:
            raise ConfigError(f"{where} has keys vLLM does not know: {unknown}; use vLLM's own argument names")


def _check_server_mode(cfg: DictConfig, files: list[Path]) -> None:
    from runner import job, prompts

    problem = prompts.check_template(job.typed_mode(cfg.mode))
    if problem:
        raise ConfigError(problem)
    if not files:
        raise ConfigError(f"no file in {cfg.mode.input_dir} matches mode.input_glob={cfg.mode.input_glob}")


def resolve(cfg: DictConfig) -> DictConfig:
    """A copy of cfg with absolute input paths and a loadable model path, checked against the inputs."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg.mode.input_dir = str(Path(cfg.mode.input_dir).expanduser().resolve())
    if cfg.mode.name == "server_per_node":
        cfg.mode.scratch_dir = str(Path(cfg.mode.scratch_dir).expanduser().resolve())
    if cfg.nodes < 1 or cfg.cluster.ranks_per_node < 1:
        raise ConfigError(f"nodes={cfg.nodes}, cluster.ranks_per_node={cfg.cluster.ranks_per_node}: both must be >= 1")
    if not Path(cfg.mode.input_dir).is_dir():
        raise ConfigError(f"mode.input_dir={cfg.mode.input_dir} is not a folder: set mode.input_dir=PATH")
    files = input_files(cfg)
    if cfg.mode.name == "server_per_node":
        _check_server_mode(cfg, files)
    inputs.validate(files)
    check_vllm_names(cfg)
    cfg.model.path = models.ensure_model(cfg.model)
    cfg.model.source = "path"
    return cfg


def launch(cfg: DictConfig) -> None:
    from launchers import launcher_for

    run = RunDir(Path(HydraConfig.get().runtime.output_dir)).make()
    resolved = resolve(cfg)
    lock = RunLock(run.root)
    lock.acquire(run_lock.holder(), force=resolved.force_lock)  # before job.yaml, which a live run reads
    try:
        job_file = job.write(resolved, run)
        log.info("run directory %s", run.root)
        launcher_for(resolved.launcher.name).launch(job.load(job_file), job_file, lock)
    finally:
        lock.release()  # a local run ended; a batch job's lock was handed to the job (nothing left here)
