"""The job file: the composed config, resolved to absolute paths, that every rank and host reads back."""

from pathlib import Path
from typing import Tuple

from omegaconf import DictConfig, OmegaConf

import yaml

from runner import atomic, schema
from runner.errors import ConfigError
from runner.run_dir import RunDir, run_dir_of  # noqa: F401  (re-exported: RunDir lives in runner.run_dir)


def write(cfg: DictConfig, run: RunDir) -> Path:
    """Write the resolved config as the job file; returns its path."""
    run.make()
    # whole or not at all: a launch killed mid-write left a job.yaml cut short, which the next launch read as
    # one without its rerun_epoch and answered every line again
    atomic.write_text(run.job_file, OmegaConf.to_yaml(cfg, resolve=True))
    return run.job_file


def read(path: Path, needs: Tuple[str, ...] = ("mode",)) -> DictConfig:
    """The job file as written, untyped (an older runner's is read too); ConfigError, one line naming the file
    and the way out, when it is not one (cut short, emptied, not text, not a mapping, without the groups
    `needs`)."""
    try:
        raw = OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:
        raise spoiled(path, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
    if not isinstance(raw, DictConfig):
        raise spoiled(path, f"a YAML {type(raw).__name__}, not a mapping")
    missing = [key for key in needs if not isinstance(raw.get(key), DictConfig)]
    if missing:
        raise spoiled(path, f"no {' or '.join(missing)}")
    return raw


def spoiled(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path} is spoiled ({why}): it records how out/ was answered; restore it, or rerun=all "
                       "answers every line again (or a new run_name=... starts a separate run)")


def load(path: Path) -> DictConfig:
    """Read a job file back with every group typed by its schema (enums are enums again)."""
    raw = read(path)
    if "gpus_per_node" in raw.get("launcher", {}):  # a Slurm job file of a runner before cluster.gpus_per_node
        del raw.launcher["gpus_per_node"]
    if "output_format" in raw.get("mode", {}):  # a job file of a runner before output.format
        old = raw.mode.pop("output_format")
        raw.output = raw.get("output") or {"format": old}
    typed = OmegaConf.structured(schema.RunnerConfig)
    for group in schema.GROUP_BASES:
        if group not in raw:  # e.g. `input`, which a runner before the input formats did not write
            raise ConfigError(f"{path} has no `{group}`: an older runner wrote it; launch the run again with this "
                              "runner (the same command, with input.path=... for mode.input_dir) to rewrite it")
        typed[group] = _schema_of(group, raw[group].name)
    merged = OmegaConf.merge(typed, raw)
    OmegaConf.set_struct(merged, True)
    return merged


def _schema_of(group: str, option: str) -> DictConfig:
    options = schema.options_of(group)
    if option not in options:
        raise ConfigError(f"{group}={option} is not an option of this runner: pick one of {sorted(options)}")
    return OmegaConf.structured(options[option])


def typed_mode(mode: DictConfig) -> DictConfig:
    """A mode config typed by its schema (enums as enums)."""
    return OmegaConf.merge(_schema_of("mode", mode.name), mode)

