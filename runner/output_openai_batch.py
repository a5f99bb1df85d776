"""output.format=openai_batch: each record as the line `vllm run-batch` writes (the OpenAI Batch API's output),
so that the tools that read run-batch's output read ours unchanged:

    {"id": "vllm-<hex>", "custom_id": "r1", "response": {"status_code": 200, "request_id": "vllm-batch-<hex>",
     "body": {"id": "chatcmpl-<hex>", "object": "chat.completion", "model": ..., "choices": [...], "usage": ...}},
     "error": null}

The body is vLLM's own ChatCompletionResponse (a chat) or CompletionResponse (a prompt: "text_completion",
choices[0].text), dumped once with placeholders and filled per record, so its keys are the installed vLLM's at
every level. An ERROR record is status_code 400 (or the server's 4xx/5xx) with `error` vLLM's ErrorResponse
({"error": {"message", "type", "param", "code"}}) and no body; a line that was no request at all (malformed)
gets run-batch's plain error: status_code 400 and `error` the reason as a string.
"""

import json
import re
import time
import uuid
from http import HTTPStatus
from typing import Any, Dict, Optional, Set, Tuple

from runner.records import Record, is_error, line_of

# the client's reason for a request the server answered with an error: "HTTP 400: <the server's message>" (after
# "failed after 3 retries: " when it was retried)
_HTTP = re.compile(r"HTTP (\d{3}): ")


def _skeletons() -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(chat body, completion body) as vLLM dumps them, with placeholder values."""
    from vllm.entrypoints.openai.chat_completion.protocol import (ChatCompletionResponse,
                                                                   ChatCompletionResponseChoice, ChatMessage)
    from vllm.entrypoints.openai.completion.protocol import CompletionResponse, CompletionResponseChoice
    from vllm.entrypoints.serve.engine.protocol import UsageInfo

    usage = UsageInfo(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    chat = ChatCompletionResponse(model="", usage=usage, choices=[ChatCompletionResponseChoice(
        index=0, message=ChatMessage(role="assistant", content=""))])
    completion = CompletionResponse(model="", usage=usage, choices=[CompletionResponseChoice(index=0, text="")])
    return chat.model_dump(mode="json"), completion.model_dump(mode="json")


def _error_info(message: str, status: int) -> Dict[str, Any]:
    from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse

    kind = "BadRequestError" if status == 400 else HTTPStatus(status).phrase.replace(" ", "") + "Error"
    return ErrorResponse(error=ErrorInfo(message=message, type=kind, code=status)).model_dump(mode="json")


def _hex() -> str:
    return uuid.uuid4().hex  # vLLM's random_uuid()


class BatchRenderer:
    def __init__(self, model: str, completions: Set[int]):
        """model: the served model name the bodies carry; completions: the line numbers sent as a prompt
        (/v1/completions), the others were chats."""
        self.model, self.completions = model, completions
        self.chat, self.completion = _skeletons()
        self.created = int(time.time())

    def line(self, record: Dict[str, Any]) -> str:
        return json.dumps(self.output(record), ensure_ascii=False)

    def output(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """The BatchRequestOutput of one record."""
        if "response" not in record:  # a record an older runner left in a resumed ledger
            record = Record.from_json(record).to_json()
        status, body, error = 200, None, None
        if not is_error(record):
            body = self._body(record)
        elif "input" in record:  # no request could be built from the line: run-batch's own error shape
            status, error = 400, record["error"]
        else:
            status, message = _status(record["error"])
            error = _error_info(message, status)
        return {"id": f"vllm-{_hex()}", "custom_id": record.get("custom_id"),
                "response": {"status_code": status, "request_id": f"vllm-batch-{_hex()}", "body": body},
                "error": error}

    def _body(self, record: Dict[str, Any]) -> Dict[str, Any]:
        prompt, output = record["prompt_tokens"], record["output_tokens"]
        usage = {**self.chat["usage"], "prompt_tokens": prompt, "completion_tokens": output,
                 "total_tokens": prompt + output}
        if line_of(record) in self.completions:
            skeleton, prefix = self.completion, "cmpl"
            choice = {**skeleton["choices"][0], "text": record["response"]}
        else:
            skeleton, prefix = self.chat, "chatcmpl"
            first = skeleton["choices"][0]
            choice = {**first, "message": {**first["message"], "content": record["response"]}}
        choice["finish_reason"] = record["finish_reason"]
        return {**skeleton, "id": f"{prefix}-{_hex()}", "created": self.created, "model": self.model,
                "choices": [choice], "usage": usage}


def _status(error: Optional[str]) -> Tuple[int, str]:
    """(HTTP status, message) of an ERROR record's reason: the server's status when it gave one, else 400 (vLLM
    refused the request)."""
    error = error or ""
    found = _HTTP.search(error)
    if found and 400 <= int(found.group(1)) < 600:
        return int(found.group(1)), error[found.end():] if found.start() == 0 else error
    return 400, error
