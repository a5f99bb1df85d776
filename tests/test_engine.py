"""runner.engine.stream_answers on a real vLLM engine (SmolLM2 on the CPU, in this process)."""

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner import engine
from runner.models import build_smollm2
from runner.readers import Entry, Request

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is the capital of France?", "Say hello.", "Name a planet.", "What is 2 + 2?", "Name a color."]


@pytest.fixture(scope="module")
def llm():
    cluster = OmegaConf.load(ROOT / "conf" / "cluster" / "local_cpu.yaml")
    model = OmegaConf.load(ROOT / "conf" / "model" / "smollm2_135m.yaml")
    path = build_smollm2(Path(os.path.expanduser("~/.cache/runner/models/SmolLM2-135M-Instruct")))
    with pytest.MonkeyPatch.context() as env:  # the machine's variables, as a rank gets them, for this module only
        for key, value in cluster.env.items():
            env.setenv(key, str(value))
        yield engine.build_llm(str(path), {**OmegaConf.to_container(model.engine),
                                           **OmegaConf.to_container(cluster.engine)})


@pytest.fixture(scope="module")
def params():
    return engine.Sampling({"temperature": 0.0, "max_tokens": 12})


def _entry(number: int, text: str, chat: bool = True, **sampling) -> Entry:
    """A chat (the text as the user's message) or a completion, with sampling values of its own."""
    if chat:
        return Entry(number, text, Request(messages=[{"role": "user", "content": text}], sampling=sampling))
    return Entry(number, text, Request(text, sampling=sampling))


def _lines(chat: bool = True):
    return [_entry(n, text, chat) for n, text in enumerate(QUESTIONS, start=1)]


def test_answers_stream_out_as_they_finish_with_a_bounded_queue(llm, params):
    steps = list(engine.stream_answers(llm, _lines(), params, max_in_flight=2))
    answered = [line.number for step in steps for line, _ in step]
    assert sorted(answered) == [1, 2, 3, 4, 5]
    assert len(steps) >= 3  # at most two in flight: the answers came out over several steps
    by_line = {line.number: answer for step in steps for line, answer in step}
    assert "Paris" in by_line[1].text
    assert all(a.output_tokens > 0 and a.prompt_tokens > 0 and a.finish_reason for a in by_line.values())


def test_no_new_line_is_started_once_may_add_turns_false(llm, params):
    calls = []

    def may_add():
        calls.append(1)
        return len(calls) == 1  # room for the first top-up only

    steps = list(engine.stream_answers(llm, _lines(chat=False), params, max_in_flight=2, may_add=may_add))
    assert sorted(line.number for step in steps for line, _ in step) == [1, 2]


class _OlderLLM:
    """The same engine seen through the API of a vLLM without enqueue (as on older site installs)."""

    def __init__(self, llm):
        self.generate, self.chat = llm.generate, llm.chat


def test_a_vllm_without_enqueue_is_answered_in_whole_batches(llm, params):
    steps = list(engine.stream_answers(_OlderLLM(llm), _lines(), params, max_in_flight=2))
    assert [[line.number for line, _ in step] for step in steps] == [[1, 2], [3, 4], [5]]
    assert "Paris" in steps[0][0][1].text


LONG = " ".join(["word"] * 3000)  # about 3000 tokens, over SmolLM2's max_model_len of 2048


def _with_a_long_line():
    lines = _lines()
    return lines[:2] + [_entry(9, LONG)] + lines[2:]


@pytest.mark.parametrize("api", ["enqueue", "older"])
def test_a_line_vllm_refuses_gets_its_reason_and_the_others_are_answered(llm, params, api):
    engine_or_older = llm if api == "enqueue" else _OlderLLM(llm)
    steps = list(engine.stream_answers(engine_or_older, _with_a_long_line(), params, max_in_flight=8))
    by_line = {line.number: answer for step in steps for line, answer in step}
    assert sorted(by_line) == [1, 2, 3, 4, 5, 9]
    refused = by_line.pop(9)
    assert "maximum" in refused.error and "2048" in refused.error and refused.output_tokens == 0
    assert all(not a.error and a.output_tokens > 0 for a in by_line.values())
    assert "Paris" in by_line[1].text


def test_a_batch_of_refused_lines_does_not_end_the_stream(llm, params):
    lines = [_entry(1, LONG, chat=False), _entry(2, LONG, chat=False), _entry(3, "Say hello.", chat=False)]
    steps = list(engine.stream_answers(llm, lines, params, max_in_flight=2))
    by_line = {line.number: answer for step in steps for line, answer in step}
    assert [bool(by_line[n].error) for n in (1, 2, 3)] == [True, True, False]


@pytest.mark.parametrize("api", ["enqueue", "older"])
def test_chats_and_completions_in_one_batch_with_their_own_sampling_each_answered_once(llm, params, api):
    """One batch, two calls to vLLM (chats, completions): a completion vLLM refuses sends its group one by one
    without adding the chats again; a value SamplingParams refuses costs its own request only."""
    entries = [_entry(1, "Say hello.", max_tokens=3, ignore_eos=True), _entry(2, "The sky is", chat=False),
               _entry(3, LONG, chat=False), _entry(4, "Name a planet.", temperature=-1),
               _entry(5, "Count to ten:", chat=False, max_tokens=2, ignore_eos=True), _entry(6, "Say no.", foo=1)]
    steps = list(engine.stream_answers(llm if api == "enqueue" else _OlderLLM(llm), entries, params,
                                       max_in_flight=8))
    answered = [entry.number for step in steps for entry, _ in step]
    assert sorted(answered) == [1, 2, 3, 4, 5, 6]  # each once
    by_number = {entry.number: answer for step in steps for entry, answer in step}
    assert (by_number[1].output_tokens, by_number[5].output_tokens) == (3, 2)
    assert by_number[5].prompt_tokens < 10 < by_number[1].prompt_tokens  # a completion: no chat template
    assert "temperature" in by_number[4].error and "foo" in by_number[6].error and "2048" in by_number[3].error
    assert not by_number[2].error and by_number[2].output_tokens > 0
