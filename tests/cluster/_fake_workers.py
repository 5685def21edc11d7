"""What the cluster tests share: worker processes that run the fake engine
(``tests/engines/_worker_fakes.py``, put on their path by the ``fake_workers`` fixture), and
waiting for what they do."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

FAKES = Path(__file__).resolve().parents[1] / "engines"  # _worker_fakes:load


async def until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    """Return once ``predicate()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
