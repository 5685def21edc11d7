"""What each generation used, kept briefly so the gateway can meter aborted requests, and
how busy the worker is (:class:`LoadTracker`).

When a client goes away mid-stream the gateway closes its connection to the worker and
never sees the final counts. It then asks ``GET /zhisuan/requests/{request_id}?wait=S``
(the id it sent as ``X-Request-Id``); the worker answers once the generation has settled
(or after ``wait`` seconds) with the tokens actually used. Records are kept for the last
``capacity`` requests only, a running one until it settles (while any settled one is left
to drop instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from zhisuan.engines.base import Delta

State = Literal["running", "finished", "cancelled", "failed"]


@dataclass(slots=True)
class RequestRecord:
    """Token counts and outcome of one generation.

    Attributes:
        id: the gateway's ``X-Request-Id`` (or the response id when there was none).
        prompt_tokens: tokens in the prompt.
        completion_tokens: tokens generated (so far, while running).
        finish_reason: ``stop`` or ``length`` once finished.
        state: running, finished, cancelled (client left) or failed (engine error).
        first_token_at: ``time.perf_counter()`` when the first token was generated.
    """

    id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    state: State = "running"
    first_token_at: float | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    on_settle: Callable[[RequestRecord], None] | None = None

    def update(self, delta: Delta) -> None:
        self.prompt_tokens = delta.prompt_tokens
        self.completion_tokens = delta.completion_tokens
        if self.first_token_at is None and delta.completion_tokens:
            self.first_token_at = time.perf_counter()
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
            self.end("finished")

    def end(self, state: State) -> None:
        """Settle the record (the first outcome wins)."""
        if self.state == "running":
            self.state = state
        if not self.settled.is_set():
            self.settled.set()
            if self.on_settle is not None:
                self.on_settle(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "finish_reason": self.finish_reason,
        }


class RequestLog:
    """The most recent generations by request id.

    Running records and settled ones are kept apart (each in the order it started or
    settled), so dropping the oldest settled record stays O(1).

    Args:
        capacity: records kept; the oldest settled ones are dropped first, and a running
            one only when every record kept is running.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._running: OrderedDict[str, RequestRecord] = OrderedDict()
        self._settled: OrderedDict[str, RequestRecord] = OrderedDict()  # oldest first
        self._capacity = capacity
        self.totals = {"generations": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def _settle(self, record: RequestRecord) -> None:
        self.totals["generations"] += 1
        self.totals["prompt_tokens"] += record.prompt_tokens
        self.totals["completion_tokens"] += record.completion_tokens
        if self._running.get(record.id) is record:  # not dropped, nor replaced by a newer one
            del self._running[record.id]
            self._settled[record.id] = record

    def start(self, request_id: str, prompt_tokens: int = 0) -> RequestRecord:
        """Open the record of a new generation (replacing an older one of that id)."""
        record = RequestRecord(request_id, prompt_tokens=prompt_tokens, on_settle=self._settle)
        self._settled.pop(request_id, None)
        self._running.pop(request_id, None)
        self._running[request_id] = record
        while len(self._running) + len(self._settled) > self._capacity:
            (self._settled or self._running).popitem(last=False)
        return record

    async def settled(self, request_id: str, wait: float) -> RequestRecord | None:
        """The record of ``request_id``, waiting up to ``wait`` seconds for it to settle.

        Args:
            request_id: as sent in ``X-Request-Id``.
            wait: seconds to wait while it is still running (0: answer at once).

        Returns:
            The record (possibly still running), or None if unknown or forgotten.
        """
        record = self._running.get(request_id) or self._settled.get(request_id)
        if record is not None and record.state == "running" and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(record.settled.wait(), timeout=wait)
        return record


class LoadTracker:
    """Requests in flight and cumulative busy time (seconds with at least one in flight)."""

    def __init__(self) -> None:
        self.active = 0
        self._since = 0.0
        self._busy = 0.0

    def enter(self) -> None:
        if self.active == 0:
            self._since = time.monotonic()
        self.active += 1

    def exit(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._busy += time.monotonic() - self._since

    @property
    def busy_s(self) -> float:
        running = time.monotonic() - self._since if self.active else 0.0
        return self._busy + running
