"""The offline vLLM engine of one rank: build it, keep it fed with requests, hand back answers as they finish."""

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple

from runner.readers import Entry, Request


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    # why vLLM refused the request; "" when it was answered
    error: str = ""


class EngineDied(Exception):
    """The engine ended under its requests (its core process died, or hung and was killed): `lost` are the
    entries it held, none of them answered."""

    def __init__(self, lost: List[Entry], why: str):
        super().__init__(why)
        self.lost, self.why = lost, why


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


class Sampling:
    """The job's SamplingParams (built once), and one per request that brings values of its own over them."""

    def __init__(self, sampling: Dict[str, Any]):
        self.values, self.default = sampling, sampling_params(sampling)

    def of(self, request: Request):
        """Raises TypeError, ValueError or vLLM's VLLMValidationError for values vLLM refuses (the request's own:
        the job's were checked at launch)."""
        return sampling_params({**self.values, **request.sampling}) if request.sampling else self.default


def _request_errors() -> tuple:
    """The exceptions vLLM raises for a request it refuses (the request's fault, not the engine's)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM: refusals are plain ValueErrors
        return (ValueError,)
    return (ValueError, VLLMClientError)


# (entry, its SamplingParams) of one call to vLLM: all chats or all completions
Group = List[Tuple[Entry, Any]]


def _enqueue_batch(llm, group: Group) -> List[str]:
    """Add the group to the engine's queue (a chat through the model's chat template) in one call; their ids.

    enqueue returns the engine's internal ids ("<id>-<8 random chars>"); outputs carry the id before the dash.
    vLLM refuses the whole call when one request is bad (it aborts the ones it had added, then raises).
    """
    params = [p for _, p in group]
    if group[0][0].request.messages is not None:
        ids = llm.enqueue_chat([e.request.messages for e, _ in group], params, use_tqdm=False)
    else:
        ids = llm.enqueue([e.request.prompt for e, _ in group], params, use_tqdm=False)
    return [request_id.split("-", 1)[0] for request_id in ids]


def _groups(entries: List[Entry], sampling: Sampling) -> Tuple[List[Group], List[Tuple[Entry, Answer]]]:
    """The entries as a group of chats and one of completions (each its own call to vLLM), and the refusals of
    those whose own sampling values vLLM does not take."""
    chats, completions, refused, errors = [], [], [], (TypeError, *_request_errors())
    for entry in entries:
        try:
            params = sampling.of(entry.request)
        except errors as e:  # TypeError: a key SamplingParams does not have, or a value of the wrong type
            refused.append((entry, _refusal(e)))
            continue
        (chats if entry.request.messages is not None else completions).append((entry, params))
    return [g for g in (chats, completions) if g], refused


def _enqueue(llm, entries: List[Entry], sampling: Sampling) -> Tuple[Dict[str, Entry], List[Tuple[Entry, Answer]]]:
    """Enqueue the entries: ({request id: entry} of those vLLM took, [(entry, refusal)] of those it refused).

    One call per group; only when vLLM refuses it are its entries added one by one, so one bad request costs
    its own and never blocks the others (nor one already added by the other group's call).
    """
    groups, refused = _groups(entries, sampling)
    taken, errors = {}, _request_errors()
    for group in groups:
        try:
            taken.update(zip(_enqueue_batch(llm, group), [e for e, _ in group]))
            continue
        except errors as e:
            if len(group) == 1:
                refused.append((group[0][0], _refusal(e)))
                continue
        for one in group:
            try:
                taken.update(zip(_enqueue_batch(llm, [one]), [one[0]]))
            except errors as e:
                refused.append((one[0], _refusal(e)))
    return taken, refused


def stream_answers(llm, entries: Iterable[Entry], sampling: Sampling, max_in_flight: int,
                   may_add: Callable[[], bool] = lambda: True, watch=None,
                   journal: Callable[[List[Entry]], None] = None) -> Iterator[List[Tuple[Entry, Answer]]]:
    """Answer the entries, yielding each engine step's finished (entry, answer) pairs as soon as they finish.

    The same step loop as LLM.generate, but at most `max_in_flight` requests sit in the engine (memory stays
    bounded for files of millions of lines) and it is topped up when half of them have finished, so the
    batch never drains at a chunk boundary. When `may_add()` turns False (the walltime is near) no new entry
    is added; the ones in flight still finish. Raises EngineDied (with the entries in flight) when the engine
    fails under them; `watch` (runner.engine_watch) is told when each step starts and returns;
    `journal` is handed each batch before it goes in (runner/inflight.py).
    """
    if not hasattr(llm, "enqueue"):  # vLLM before enqueue/enqueue_chat (older site installs): whole batches
        yield from _batches(llm, entries, sampling, max_in_flight, may_add)
        return
    todo, in_flight, engine = iter(entries), {}, llm.llm_engine
    while True:
        if len(in_flight) <= max_in_flight // 2 and may_add():
            batch = list(itertools.islice(todo, max_in_flight - len(in_flight)))
            if batch:
                journal and journal(batch)
                taken, refused = _of_engine(lambda: _enqueue(llm, batch, sampling), in_flight, batch, watch)
                in_flight.update(taken)
                if refused:
                    yield refused
                if not in_flight:
                    continue  # vLLM refused every entry of this batch: take the next ones
        if not in_flight:
            return
        watch and watch.stepping(True)
        outputs = _of_engine(engine.step, in_flight, [], watch)
        watch and watch.stepping(False)
        finished = [output for output in outputs if output.finished]
        if finished:
            yield [(in_flight.pop(output.request_id), _answer(output)) for output in finished]


def _of_engine(call: Callable, in_flight: Dict, batch: List[Entry], watch):
    """call(), a call into the engine: its failure (not a request's refusal: _enqueue answers those) is the
    engine's, EngineDied with the entries in flight. Only the engine's calls are read so: an error of the rank's
    own (a journal append on a full disk, the input unreadable) is no death, nor any line's fault."""
    try:
        return call()
    except Exception as e:
        why = (watch and watch.why) or f"died ({type(e).__name__}: {e})"
        raise EngineDied(list(in_flight.values()) + batch, why) from e


def _batches(llm, entries: Iterable[Entry], sampling: Sampling, size: int,
             may_add: Callable[[], bool]) -> Iterator[List[Tuple[Entry, Answer]]]:
    todo = iter(entries)
    while may_add() and (batch := list(itertools.islice(todo, size))):
        groups, refused = _groups(batch, sampling)
        yield refused + [pair for group in groups for pair in _generate_group(llm, group)]


def _generate(llm, group: Group) -> List[Answer]:
    params = [p for _, p in group]
    if group[0][0].request.messages is not None:
        outputs = llm.chat([e.request.messages for e, _ in group], params, use_tqdm=False)
    else:
        outputs = llm.generate([e.request.prompt for e, _ in group], params, use_tqdm=False)
    return [_answer(output) for output in outputs]


def _generate_group(llm, group: Group) -> List[Tuple[Entry, Answer]]:
    """One call for the group; one bad request refuses it: then one by one."""
    try:
        return list(zip([e for e, _ in group], _generate(llm, group)))
    except _request_errors() as e:
        if len(group) == 1:
            return [(group[0][0], _refusal(e))]
    return [pair for one in group for pair in _generate_group(llm, [one])]


def _refusal(e: Exception) -> Answer:
    return Answer("", 0, 0, "", error=f"vLLM refused the request: {type(e).__name__}: {e}")


def _answer(output) -> Answer:
    best = output.outputs[0]
    return Answer(best.text, len(output.prompt_token_ids or []), len(best.token_ids), str(best.finish_reason))
