"""The object doing each group option's work: the class its `_target_` names, built with the job's config.

The classes take the whole job config (a mode needs the cluster's ranks per node, a launcher the mode's
processes), so they are imported with hydra.utils.get_class and called with it, rather than instantiated
from their own group's fields.
"""

from hydra.utils import get_class
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
    try:
        cls = get_class(target)
    except Exception:  # hydra's message spans lines; the key and the path are what the user needs
        raise ConfigError(f"{group}._target_={target} names no importable class: fix the module.Class path") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{group}._target_={target} is not a {base.__module__}.{base.__name__}")
    return cls(cfg)


def mode_of(cfg: DictConfig):
    from runner.mode import Mode

    return build(cfg, "mode", Mode)


def launcher_of(cfg: DictConfig):
    from launchers.base import Launcher

    return build(cfg, "launcher", Launcher)


def staging_of(cfg: DictConfig):
    from runner.staging import Staging

    return build(cfg, "staging", Staging)
