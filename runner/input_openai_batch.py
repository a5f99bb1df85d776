"""input=openai_batch: the input of the OpenAI Batch API and of `vllm run-batch`, one request a line:

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [...], "max_tokens": 64}}

`url` /v1/chat/completions sends body.messages through the chat path, /v1/completions body.prompt through the
completion path; the body's other keys (max_tokens, temperature, top_p, seed, stop, ...) are this request's
sampling values over the job's `sampling`. custom_id is the record's id (input.id_fields). A line that is no such
request is an ERROR record naming what it lacks.
"""

from pathlib import Path
from typing import Any, Dict, Tuple

from runner import inputs
from runner.readers import Entry, Request, TextReader, json_object, malformed, messages_problem

_CHAT, _COMPLETION = "/v1/chat/completions", "/v1/completions"
# body keys that are no sampling value: the model is the job's, answers are not streamed, and OpenAI's
# bookkeeping (user, metadata, store, service_tier) does not shape an answer. Any other key is a sampling value:
# one vLLM's SamplingParams does not have is an ERROR record under per_tile (the server decides for itself)
_NOT_SAMPLING = {"model", "messages", "prompt", "stream", "stream_options", "user", "metadata", "store",
                 "service_tier"}
# OpenAI's names for vLLM's
_RENAMED = {"max_completion_tokens": "max_tokens"}


class OpenAIBatchReader(TextReader):
    def entry(self, path: Path, line: inputs.Line) -> Entry:
        value, problem = json_object(line)
        if value is None:
            return malformed(line.number, line.text, f"the line is {problem}, not an OpenAI batch request")
        ids = self.ids(value)
        problem = _problem(value)
        if problem:
            return malformed(line.number, line.text, problem, ids)
        body = value["body"]
        sampling = _sampling(body)
        if value["url"] == _CHAT:
            return Entry(line.number, line.text, Request(messages=body["messages"], ids=ids, sampling=sampling))
        return Entry(line.number, line.text, Request(body["prompt"], ids=ids, sampling=sampling))


def _problem(value: Dict[str, Any]) -> str:
    if not isinstance(value.get("custom_id"), str):
        return "the request has no custom_id string"
    if value.get("method", "POST") != "POST":
        return f"method {value['method']!r} is not POST"
    if value.get("url") not in (_CHAT, _COMPLETION):
        return f"url {value.get('url')!r} is neither {_CHAT} nor {_COMPLETION}"
    body = value.get("body")
    if not isinstance(body, dict):
        return "the request has no body object"
    if value["url"] == _CHAT:
        return messages_problem(body.get("messages"))
    if not isinstance(body.get("prompt"), str):
        return "body.prompt is not one string (one line is one request: a list of prompts is not taken)"
    return ""


def _sampling(body: Dict[str, Any]) -> Dict[str, Any]:
    return dict(_renamed(key, value) for key, value in body.items() if key not in _NOT_SAMPLING)


def _renamed(key: str, value: Any) -> Tuple[str, Any]:
    return _RENAMED.get(key, key), value
