"""input=openai_batch: the input of the OpenAI Batch API and of `vllm run-batch`, one request a line:

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [...], "max_tokens": 64}}

`url` /v1/chat/completions sends body.messages through the chat path, /v1/completions body.prompt through the
completion path; the body's other keys (max_tokens, temperature, top_p, seed, stop, ...) are this request's
sampling values over the job's `sampling`. custom_id is the record's id (input.id_fields). A line that is no such
request is an ERROR record naming what it lacks.
"""

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from runner import inputs
from runner.readers import Entry, Request, TextReader, json_object, malformed, messages_problem
from runner.schema import OutputFormat

_CHAT, _COMPLETION = "/v1/chat/completions", "/v1/completions"
# body keys that are no sampling value: the model is the job's, answers are not streamed, and OpenAI's
# bookkeeping (user, metadata, store, service_tier) does not shape an answer. Any other key is a sampling value:
# one vLLM's SamplingParams does not have is an ERROR record under per_tile (the server decides for itself)
_NOT_SAMPLING = {"model", "messages", "prompt", "stream", "stream_options", "user", "metadata", "store",
                 "service_tier"}
# OpenAI's names for vLLM's
_RENAMED = {"max_completion_tokens": "max_tokens"}


class OpenAIBatchReader(TextReader):
    # the output vllm run-batch writes, so that the tools that read its output read ours
    output_format = OutputFormat.openai_batch

    def entry(self, path: Path, line: inputs.Line) -> Entry:
        return self._entry(line, *json_object(line))

    def _entry(self, line: inputs.Line, value: Optional[Dict[str, Any]], problem: str) -> Entry:
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

    def __init__(self, cfg):
        super().__init__(cfg)
        # file name -> '' or its repeated custom_id, found as the launch's one pass read the file
        # (runner.launch_pass): check() reads no file the pass has read
        self._repeats: Dict[str, str] = {}

    def count(self, path: Path, scanner=None) -> int:
        repeats = _Repeats(path)
        for line in inputs.iter_lines(path, scanner=scanner):
            value, _ = json_object(line)
            repeats.see(value.get("custom_id") if value is not None else None, line.number)
        self._repeats[path.name] = repeats.found()
        return repeats.lines

    def read_all(self, path: Path, scanner=None) -> Iterator[Entry]:
        repeats = _Repeats(path)
        for line in inputs.iter_lines(path, scanner=scanner):
            value, problem = json_object(line)  # parsed once for the entry and the repeats
            repeats.see(value.get("custom_id") if value is not None else None, line.number)
            yield self._entry(line, value, problem)
        self._repeats[path.name] = repeats.found()

    def check(self, files: List[Path]) -> str:
        """As every reader's, and a custom_id twice in one file is refused: its answers are joined on it. A file
        the launch pass read to its end is not read again."""
        return super().check(files) or next(filter(None, (self._repeated(path) for path in files)), "")

    def _repeated(self, path: Path) -> str:
        if path.name not in self._repeats:
            self.count(path)
        return self._repeats[path.name]


class _Repeats:
    """The first custom_id on two lines of one file, and every line it is on, from the file's lines in order."""

    def __init__(self, path: Path):
        self.path, self.lines = path, 0
        self.first: Dict[str, int] = {}
        self.twice: Optional[str] = None
        self.on: List[int] = []

    def see(self, custom_id: Any, number: int) -> None:
        self.lines += 1
        if not isinstance(custom_id, str):
            return  # the line's own ERROR record says so
        if self.twice is None and custom_id in self.first:
            self.twice, self.on = custom_id, [self.first[custom_id]]
        if custom_id == self.twice:
            self.on.append(number)
        self.first.setdefault(custom_id, number)

    def found(self) -> str:
        """'' or the refusal naming the repeated custom_id's lines."""
        self.first = {}  # a file of millions of ids is not held past its pass
        if self.twice is None:
            return ""
        return (f"{self.path}: custom_id {self.twice!r} is on lines {', '.join(map(str, self.on))}: the answers are "
                "joined on custom_id, so each request needs its own; rename or remove the repeats")


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
