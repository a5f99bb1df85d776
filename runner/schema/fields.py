"""Field helpers of the schemas: the range a number must keep (runner/limits.py checks it at launch)."""

from dataclasses import field


def at_least(low: int, default=None, factory=None):
    """A field whose value (each entry, for a list) must be >= low; every other number of these schemas must be
    >= 0 (runner/limits.py checks them at launch)."""
    return (field(default_factory=factory, metadata={"min": low}) if factory
            else field(default=default, metadata={"min": low}))


def above_zero(default: float):
    """A field whose value must be > 0: a period or a timeout that 0 would make a busy loop or an instant failure."""
    return field(default=default, metadata={"above": 0})
