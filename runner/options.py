"""The object doing each group option's work: the class its `_target_` names, built with the job's config.

The classes take the whole job config (a mode needs the cluster's ranks per node, a launcher the mode's
processes), so they are imported by their path and called with it, rather than instantiated by hydra from
their own group's fields (and hydra.utils.get_class logs a multi-line error before the one-line one here).
Each seam builds its own option with `build` (runner.mode.mode_of, launchers.base.launcher_of,
runner.staging.staging_of, runner.readers.reader_of), so this module imports none of them.
"""

import importlib
import inspect

from omegaconf import DictConfig

from runner import schema
from runner.errors import ConfigError


def target_of(cfg: DictConfig, group: str) -> str:
    """The class path of the group's option; a job file of an older runner without `_target_` gets the schema's."""
    node = cfg[group]
    target = node.get("_target_")
    if target:
        return target
    options = schema.options_of(group)
    if node.name not in options:
        raise ConfigError(f"{group}={node.name} is not an option of this runner: pick one of {sorted(options)}")
    return options[node.name]._target_


def build(cfg: DictConfig, group: str, base: type):
    """The group option's object; a `_target_` that does not name a subclass of `base` is a ConfigError."""
    target = target_of(cfg, group)
    cls = class_of(target, f"{group}._target_")
    if not (isinstance(cls, type) and issubclass(cls, base)) or inspect.isabstract(cls):
        raise ConfigError(f"{group}._target_={target} is not a concrete {base.__module__}.{base.__name__}")
    return cls(cfg)


def class_of(target: str, key: str):
    """The object a module.Name path names; a ConfigError naming `key` when it cannot be imported."""
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{key}={target} names no importable class: fix the module.Class path") from None
