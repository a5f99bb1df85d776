"""Structured config: one base schema per group and one subclass per option, registered in Hydra's ConfigStore.

YAML files in conf/ extend these schemas (``defaults: [base_per_tile, _self_]``) and hold only what they change,
so a wrong key or a wrong value fails when Hydra composes the config, before anything starts. Each option's
`_target_` names the class that does its work (runner.options builds it); a new option is a subclass in its group's
module here, the module with its class, and its YAML: it is registered by being a subclass.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from runner.schema.cluster import Accelerator, ClusterConfig
from runner.schema.fields import above_zero, at_least
from runner.schema.input import (InputConfig, JsonlInputConfig, LinesInputConfig, OpenAIBatchInputConfig,
                                 ParquetInputConfig, TemplatedInputConfig, TsvInputConfig)
from runner.schema.launcher import LauncherConfig, LocalLauncherConfig, PbsLauncherConfig, SlurmLauncherConfig
from runner.schema.mode import Assign, ModeConfig, OnTooLong, PerTileConfig, PromptStyle, ServerPerNodeConfig
from runner.schema.model import ModelConfig, ModelSource
from runner.schema.output import OutputConfig, OutputFormat
from runner.schema.staging import MpiBcastStagingConfig, NoStagingConfig, StagingConfig

# each group's module (mode.py, input.py, ...) holds its base schema and options; their names are the
# package's, so `from runner.schema import PerTileConfig` reads the same wherever it is
__all__ = [
    "Accelerator", "Assign", "ClusterConfig", "GROUP_BASES", "InputConfig", "JsonlInputConfig", "LauncherConfig",
    "LinesInputConfig", "LocalLauncherConfig", "ModeConfig", "ModelConfig", "ModelSource", "MpiBcastStagingConfig",
    "NoStagingConfig", "OnTooLong", "OpenAIBatchInputConfig", "OutputConfig", "OutputFormat", "ParquetInputConfig",
    "PbsLauncherConfig", "PerTileConfig", "PromptStyle", "RerunPolicy", "RunnerConfig", "ServerPerNodeConfig",
    "SlurmLauncherConfig", "StagingConfig", "TemplatedInputConfig", "TsvInputConfig", "above_zero", "at_least",
    "options_of", "register_configs",
]


class RerunPolicy(Enum):
    # answer lines with no record, or only ERROR records (default)
    errors = "errors"
    # as errors, and answer an input file changed before its last answered line again from the start
    changed = "changed"
    # answer every line again (also after a change of the answer-shaping config)
    all = "all"
    # answer only lines with no record: ERROR records stay final
    none = "none"

    @property
    def retries_errors(self) -> bool:
        """ERROR records are answered again: under errors, and under changed (which does all that errors does)."""
        return self in (RerunPolicy.errors, RerunPolicy.changed)


@dataclass
class RunnerConfig:
    mode: ModeConfig = MISSING
    input: InputConfig = MISSING
    output: OutputConfig = field(default_factory=OutputConfig)
    model: ModelConfig = MISSING
    launcher: LauncherConfig = MISSING
    staging: StagingConfig = MISSING
    cluster: ClusterConfig = MISSING
    # nodes of the allocation (hosts under launcher=local)
    nodes: int = at_least(1, 1)
    # run directory name under outputs/; rerunning with the same name resumes
    run_name: str = MISSING
    # vllm.SamplingParams arguments, with vLLM's own names
    sampling: Dict[str, Any] = field(default_factory=dict)
    # vLLM engine arguments over model.engine and cluster.engine (e.g. engine.max_num_seqs=512 on the command
    # line); job.yaml holds the three merged, exactly as vLLM receives them
    engine: Dict[str, Any] = field(default_factory=dict)
    # what a rerun of the same run answers again: errors | changed | all | none (runner/rerun.py); a changed
    # input or answer-shaping config (model, engine, sampling, input format, template, columns) is refused without it
    rerun: RerunPolicy = RerunPolicy.errors
    # set by the launcher, not by hand: the answer set the outputs belong to (a new one under rerun=all)
    rerun_epoch: str = ""
    # write the job's scripts into the run directory and exit without running them (the plan is printed too)
    dry_run: bool = False
    # print the pre-flight plan (files, lines, tokens, work items per rank, time estimate) and exit: no run
    # directory, no lock, nothing started or submitted
    plan: bool = False
    # output tokens per second of the whole job, for the plan's time estimate; 0: the run's last summary.json
    plan_tokens_per_s: float = 0.0
    # take the run directory's lock even though a live launch or a queued or running job holds it (only when
    # you know that holder is gone, e.g. on a host this one cannot check; the holder is named when refused)
    force_lock: bool = False


# each group's base schema; its subclasses are the group's options
GROUP_BASES = {"mode": ModeConfig, "input": InputConfig, "launcher": LauncherConfig, "staging": StagingConfig}


def options_of(group: str) -> Dict[str, type]:
    """The option schemas of a group with a base schema, by option name."""
    found, todo = {}, list(GROUP_BASES[group].__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.name != MISSING:  # a shared intermediate schema (TemplatedInputConfig) is no option
            found[cls.name] = cls
        todo += cls.__subclasses__()
    return found


def register_configs() -> None:
    """Register the top-level schema and every group option's schema (as base_<option>)."""
    cs = ConfigStore.instance()
    cs.store(name="runner_schema", node=RunnerConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="cluster", name="base_cluster", node=ClusterConfig)
    for group in GROUP_BASES:
        for name, node in options_of(group).items():
            cs.store(group=group, name=f"base_{name}", node=node)
