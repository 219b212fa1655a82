"""Waiting in tests for what another process does, never without a limit."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout_s: float = 60.0, interval_s: float = 0.01) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` has passed; whether it came true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True
