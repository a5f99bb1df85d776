"""The offline vLLM engine of one rank: build it, keep it fed with lines, hand back answers as they finish."""

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple

from runner.inputs import Line
from runner.schema import PromptStyle


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    # why vLLM refused the request; "" when it was answered
    error: str = ""


def engine_args(cfg) -> Dict[str, Any]:
    """The vLLM engine arguments: the model's, the machine's over them (cluster.engine), the command line's over
    both (engine). The launch stores the result in `engine`, so job.yaml shows what vLLM receives."""
    from omegaconf import OmegaConf

    layers = [OmegaConf.select(cfg, key) for key in ("model.engine", "cluster.engine", "engine")]
    return {k: v for layer in layers if layer is not None for k, v in OmegaConf.to_container(layer).items()}


def build_llm(model_path: str, engine_args: Dict[str, Any]):
    from vllm import LLM

    return LLM(model=model_path, **engine_args)


def sampling_params(sampling: Dict[str, Any]):
    from vllm import SamplingParams

    return SamplingParams(**sampling)


def _request_errors() -> tuple:
    """The exceptions vLLM raises for a request it refuses (the request's fault, not the engine's)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM: refusals are plain ValueErrors
        return (ValueError,)
    return (ValueError, VLLMClientError)


def _enqueue_batch(llm, lines: List[Line], style: PromptStyle, params) -> List[str]:
    """Add the lines to the engine's queue (chat: through the model's chat template) in one call; their ids.

    enqueue returns the engine's internal ids ("<id>-<8 random chars>"); outputs carry the id before the dash.
    vLLM refuses the whole call when one request is bad (it aborts the ones it had added, then raises).
    """
    if style == PromptStyle.chat:
        ids = llm.enqueue_chat([[{"role": "user", "content": line.text}] for line in lines], params, use_tqdm=False)
    else:
        ids = llm.enqueue([line.text for line in lines], params, use_tqdm=False)
    return [request_id.split("-", 1)[0] for request_id in ids]


def _enqueue(llm, lines: List[Line], style: PromptStyle, params) -> Tuple[Dict[str, Line], List[Tuple[Line, Answer]]]:
    """Enqueue the lines: ({request id: line} of those vLLM took, [(line, refusal)] of those it refused).

    One call for the whole batch; only when vLLM refuses it are the lines added one by one, so one bad line
    costs its own request and never blocks the others.
    """
    errors = _request_errors()
    try:
        return dict(zip(_enqueue_batch(llm, lines, style, params), lines)), []
    except errors as e:
        if len(lines) == 1:
            return {}, [(lines[0], _refusal(e))]
    taken, refused = {}, []
    for line in lines:
        try:
            taken.update(zip(_enqueue_batch(llm, [line], style, params), [line]))
        except errors as e:
            refused.append((line, _refusal(e)))
    return taken, refused


def stream_answers(llm, lines: Iterable[Line], style: PromptStyle, params, max_in_flight: int,
                   may_add: Callable[[], bool] = lambda: True) -> Iterator[List[Tuple[Line, Answer]]]:
    """Answer the lines, yielding each engine step's finished (line, answer) pairs as soon as they finish.

    The same step loop as LLM.generate, but at most `max_in_flight` requests sit in the engine (memory stays
    bounded for files of millions of lines) and it is topped up when half of them have finished, so the
    batch never drains at a chunk boundary. When `may_add()` turns False (the walltime is near) no new line
    is added; the ones in flight still finish.
    """
    if not hasattr(llm, "enqueue"):  # vLLM before enqueue/enqueue_chat (older site installs): whole batches
        yield from _batches(llm, lines, style, params, max_in_flight, may_add)
        return
    todo, in_flight, engine = iter(lines), {}, llm.llm_engine
    while True:
        if len(in_flight) <= max_in_flight // 2 and may_add():
            batch = list(itertools.islice(todo, max_in_flight - len(in_flight)))
            if batch:
                taken, refused = _enqueue(llm, batch, style, params)
                in_flight.update(taken)
                if refused:
                    yield refused
                if not in_flight:
                    continue  # vLLM refused every line of this batch: take the next ones
        if not in_flight:
            return
        finished = [output for output in engine.step() if output.finished]
        if finished:
            yield [(in_flight.pop(output.request_id), _answer(output)) for output in finished]


def _batches(llm, lines: Iterable[Line], style: PromptStyle, params, size: int,
             may_add: Callable[[], bool]) -> Iterator[List[Tuple[Line, Answer]]]:
    todo = iter(lines)
    while may_add() and (batch := list(itertools.islice(todo, size))):
        try:
            yield list(zip(batch, _generate(llm, batch, style, params)))
        except _request_errors():  # one bad line refuses the batch: answer them one by one
            yield [(line, answer) for line in batch for answer in _generate_one(llm, line, style, params)]


def _generate(llm, batch: List[Line], style: PromptStyle, params) -> List[Answer]:
    if style == PromptStyle.chat:
        outputs = llm.chat([[{"role": "user", "content": line.text}] for line in batch], params, use_tqdm=False)
    else:
        outputs = llm.generate([line.text for line in batch], params, use_tqdm=False)
    return [_answer(output) for output in outputs]


def _generate_one(llm, line: Line, style: PromptStyle, params) -> List[Answer]:
    try:
        return _generate(llm, [line], style, params)
    except _request_errors() as e:
        return [_refusal(e)]


def _refusal(e: Exception) -> Answer:
    return Answer("", 0, 0, "", error=f"vLLM refused the request: {type(e).__name__}: {e}")


def _answer(output) -> Answer:
    best = output.outputs[0]
    return Answer(best.text, len(output.prompt_token_ids or []), len(best.token_ids), str(best.finish_reason))
