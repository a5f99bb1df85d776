"""Counts of the lines answered in this run and their tokens, summed per file, per host and per rank."""

from dataclasses import asdict, dataclass, fields


@dataclass
class Tally:
    answered: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0

    def count(self, record: dict) -> None:
        self.answered += 1
        self.errors += record.get("status") == "ERROR"
        self.prompt_tokens += record["prompt_tokens"]
        self.output_tokens += record["output_tokens"]

    def add(self, other: "Tally") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return asdict(self)
