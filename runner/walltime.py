"""The job's deadline, so clients stop taking new work in time to flush and archive.

Launchers export RUNNER_DEADLINE (epoch seconds) at job start; ranks read it here.
"""

import os
import time
from typing import Optional

DEADLINE_VAR = "RUNNER_DEADLINE"


def deadline_env(walltime_min: int, now: Optional[float] = None) -> dict:
    """The variable to export at job start; none when there is no walltime."""
    if walltime_min <= 0:
        return {}
    return {DEADLINE_VAR: str(int((now or time.time()) + walltime_min * 60))}


def seconds_left() -> Optional[float]:
    """Seconds until the deadline, or None without one."""
    value = os.environ.get(DEADLINE_VAR)
    return float(value) - time.time() if value else None


def near_end(margin_s: float) -> bool:
    """Less than margin_s seconds are left before the deadline (never true without one)."""
    left = seconds_left()
    return left is not None and left < margin_s
