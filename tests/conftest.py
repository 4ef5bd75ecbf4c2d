"""Helpers shared by the test modules."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def _wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s until it is truthy; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def wait_for() -> Callable[[Callable[[], object], float, str], None]:
    return _wait_for
