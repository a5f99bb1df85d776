"""Counts of the lines answered in this run and their tokens, summed per file, per host and per rank."""

from dataclasses import asdict, dataclass, fields

from runner.records import is_error


@dataclass
class Tally:
    answered: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0

    def count(self, record: dict) -> None:
        self.answered += 1
        self.errors += is_error(record)
        self.prompt_tokens += record["prompt_tokens"]
        self.output_tokens += record["output_tokens"]

    def add(self, other: "Tally") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return asdict(self)

    def progress(self, todo: int, seconds: float) -> str:
        """'a/b lines answered (e errors), r output tokens/s, about t left' for a progress line."""
        rate = self.answered / seconds if seconds > 0 else 0.0
        left = f"about {_duration((todo - self.answered) / rate)} left" if rate > 0 else "time left unknown yet"
        return (f"{self.answered}/{todo} lines answered ({self.errors} errors), "
                f"{self.output_tokens / max(seconds, 1e-9):.1f} output tokens/s, {left}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
