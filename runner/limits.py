"""Every number of the config in its range, checked before a launch reads or makes anything.

Seconds, counts, sizes and ports are never negative; a field of runner/schema/ that needs more says so in its
metadata (schema.at_least, schema.above_zero, a "max"). OmegaConf checks only types, and a wrong sign does harm
far from where it was typed: a negative mode.stall_s counts a server hung after one health check without a new
token, a negative health_interval_s polls /health in a busy loop, a zero max_in_flight never submits a line.
"""

import math
from dataclasses import fields, is_dataclass
from typing import List, get_args, get_origin

from omegaconf import DictConfig, ListConfig, OmegaConf

from runner.errors import ConfigError


def check(cfg: DictConfig) -> None:
    """Refuse the first number out of its range, naming the key and the range, then a walltime too short."""
    found = problems(cfg) + [_walltime_problem(cfg)]
    if found[0]:
        raise ConfigError(found[0])


def _walltime_problem(cfg: DictConfig) -> str:
    """A walltime shorter than the margin kept free at its end: every rank would stop before its first line, an
    allocation of every node spent on engine starts. (One just as long is let through: then the launcher suite
    can show, without a race, that the deadline reaches the workers.)"""
    minutes, margin = cfg.launcher.walltime_min, cfg.mode.walltime_margin_s
    if minutes <= 0 or minutes * 60 >= margin:
        return ""
    return (f"launcher.walltime_min={minutes} leaves no time to answer: it is shorter than the "
            f"mode.walltime_margin_s={margin} kept free at its end; raise launcher.walltime_min or lower "
            "mode.walltime_margin_s")


def problems(node: DictConfig, where: str = "") -> List[str]:
    """What is out of range in a node typed by a schema and in the schema-typed nodes below it."""
    schema = OmegaConf.get_type(node)
    if not is_dataclass(schema):  # a free mapping (engine, sampling): vLLM checks its own values
        return []
    found = []
    for spec in fields(schema):
        if spec.name.startswith("_") or OmegaConf.is_missing(node, spec.name):
            continue
        key, value = f"{where}{spec.name}", node[spec.name]
        if isinstance(value, DictConfig):
            found += problems(value, f"{key}.")
        elif _numeric(spec.type):
            each = ([(f"{key}[{i}]", one) for i, one in enumerate(value)] if isinstance(value, ListConfig)
                    else [(key, value)])
            found += [problem for name, one in each if (problem := _out_of_range(name, one, spec.metadata))]
    return found


def _numeric(annotation) -> bool:
    if get_origin(annotation) is list:
        return get_args(annotation)[0] in (int, float)
    return annotation in (int, float)


def _out_of_range(key: str, value, bounds) -> str:
    if not math.isfinite(value):
        return f"{key}={value} is not a finite number: give {key} a number"
    rule = (f"> {bounds['above']}" if "above" in bounds and value <= bounds["above"]
            else f">= {bounds.get('min', 0)}" if value < bounds.get("min", 0)
            else f"<= {bounds['max']}" if "max" in bounds and value > bounds["max"] else "")
    return f"{key}={value} is out of range: give {key} a number {rule}" if rule else ""
