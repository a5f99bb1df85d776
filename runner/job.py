"""The job file: the composed config, resolved to absolute paths, that every rank and host reads back."""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from runner import schema
from runner.errors import ConfigError


@dataclass(frozen=True)
class RunDir:
    """The files of one run. Everything a rank writes lands under `root` (on the shared filesystem)."""

    root: Path

    @property
    def job_file(self) -> Path:
        return self.root / "job.yaml"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def stats(self) -> Path:
        return self.root / "stats"

    @property
    def too_long_file(self) -> Path:
        """The input lines found too long at launch under mode.on_too_long=record (runner.preflight)."""
        return self.root / "too_long.json"

    @property
    def claims(self) -> Path:
        """server_per_node's work-queue claims, a folder per attempt (made here once, not by every host)."""
        return self.root / "claims"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    def make(self) -> "RunDir":
        for path in (self.root, self.out, self.logs, self.stats, self.claims):
            path.mkdir(parents=True, exist_ok=True)
        return self


def write(cfg: DictConfig, run: RunDir) -> Path:
    """Write the resolved config as the job file; returns its path."""
    run.make()
    run.job_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return run.job_file


def load(path: Path) -> DictConfig:
    """Read a job file back with every group typed by its schema (enums are enums again)."""
    raw = OmegaConf.load(path)
    typed = OmegaConf.structured(schema.RunnerConfig)
    for group in schema.GROUP_BASES:
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


def run_dir_of(path: Path) -> RunDir:
    return RunDir(Path(path).resolve().parent)
