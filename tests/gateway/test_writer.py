"""The usage writer commits in batches and retries a failed commit."""

from __future__ import annotations

import threading
from typing import Any

from zhisuan.gateway._writer import UsageWriter


def test_batches_and_resolves_every_future() -> None:
    batches: list[int] = []
    gate = threading.Event()

    def write(records: list[dict[str, Any]]) -> None:
        gate.wait(5)
        batches.append(len(records))

    writer = UsageWriter(write)
    futures = [writer.submit({"request_id": str(i)}) for i in range(100)]
    gate.set()
    for fut in futures:
        fut.result(timeout=5)
    writer.close()
    assert sum(batches) == 100
    assert len(batches) < 100  # records that queued up together went in one commit


def test_retries_then_succeeds() -> None:
    attempts = [0]

    def write(records: list[dict[str, Any]]) -> None:
        attempts[0] += 1
        if attempts[0] < 3:
            raise RuntimeError("database is locked")

    writer = UsageWriter(write)
    writer.submit({"request_id": "x"}).result(timeout=5)
    writer.close()
    assert attempts[0] == 3
