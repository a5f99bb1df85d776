"""input=jsonl: a non-blank line is one JSON object. Its `messages` (a list of {role, content}) are sent as the
chat as they are; otherwise input.template over its keys is the prompt. A line that is not a JSON object is an
ERROR record.
"""

from pathlib import Path

from runner import inputs
from runner.readers import Entry, Request, TextReader, json_object, malformed, messages_problem


class JsonlReader(TextReader):
    def entry(self, path: Path, line: inputs.Line) -> Entry:
        value, problem = json_object(line)
        if value is None:
            return malformed(line.number, line.text, f"the line is {problem}")
        ids = self.ids(value)
        if "messages" in value:
            problem = messages_problem(value["messages"])
            if problem:
                return malformed(line.number, line.text, problem, ids)
            return Entry(line.number, line.text, Request(messages=value["messages"], ids=ids))
        return self.templated(line.number, line.text, {"line": line.text, **value})
