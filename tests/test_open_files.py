"""A host's client holds one socket per request in flight: it raises its soft open-file limit to fit them."""

import resource
import subprocess
import sys

PROBE = """
import logging, resource
logging.basicConfig(level=logging.WARNING)
from runner.client import raise_open_file_limit
print(raise_open_file_limit(1024), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _probe(soft: int, hard: int) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run([sys.executable, "-c", PROBE], preexec_fn=limit, capture_output=True, text=True, check=True)


def test_soft_limit_is_raised_to_fit_the_connections():
    proc = _probe(128, 4096)
    assert proc.stdout.split() == ["1280", "1280"]
    assert proc.stderr == ""  # no warning: the limit was raised


def test_a_hard_limit_too_low_is_named():
    proc = _probe(128, 512)
    assert proc.stdout.split() == ["512", "512"]
    assert "open-file limit 512 (hard) is below mode.concurrency=1024" in proc.stderr
