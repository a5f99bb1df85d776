"""The offline vLLM engine of one rank: build it, turn lines into requests, collect answers."""

from dataclasses import dataclass
from typing import Any, Dict, List

from runner.schema import PromptStyle


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str


def engine_args(cfg) -> Dict[str, Any]:
    """The model's vLLM engine arguments, overridden by the machine's (cluster.engine)."""
    from omegaconf import OmegaConf

    return {**OmegaConf.to_container(cfg.model.engine), **OmegaConf.to_container(cfg.cluster.engine)}


def build_llm(model_path: str, engine_args: Dict[str, Any]):
    from vllm import LLM

    return LLM(model=model_path, **engine_args)


def sampling_params(sampling: Dict[str, Any]):
    from vllm import SamplingParams

    return SamplingParams(**sampling)


def generate(llm, prompts: List[str], style: PromptStyle, params) -> List[Answer]:
    """One answer per prompt, in order."""
    if style == PromptStyle.chat:
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        outputs = llm.chat(conversations, params, use_tqdm=False)
    else:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    return [_answer(o) for o in outputs]


def _answer(output) -> Answer:
    best = output.outputs[0]
    return Answer(best.text, len(output.prompt_token_ids or []), len(best.token_ids), str(best.finish_reason))
