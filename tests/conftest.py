"""Fixtures only; what the tests share lives in tests/helpers/ (imported as `helpers.<module>`)."""

import uuid

import pytest


@pytest.fixture
def tag() -> str:
    """A tag for one test's run: its processes carry it in their environment (helpers.processes.tagged_env)."""
    return uuid.uuid4().hex
