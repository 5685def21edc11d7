"""Usage records reach the store through one writer thread that commits in batches.

A request that ends normally waits for its record's commit before the client sees the
end of the answer, so every finished response has a durable record even if the gateway
is killed right after (SQLite in WAL mode survives a process kill once committed).
Batching keeps that wait short under load: one commit carries every record that arrived
while the previous one was being written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger(__name__)

Record = dict[str, Any]
_STOP = object()
ATTEMPTS = 4


class UsageWriter:
    """Background batch writer.

    Args:
        write: stores a batch (called from the writer thread), e.g. ``store.add_usage``.
        max_batch: records per commit at most.
    """

    def __init__(self, write: Callable[[list[Record]], object], max_batch: int = 512) -> None:
        self._write = write
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Record, Future[None]] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def submit(self, record: Record) -> Future[None]:
        """Queue ``record``; the future resolves once it is committed."""
        fut: Future[None] = Future()
        self._queue.put((record, fut))
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[tuple[Record, Future[None]]] = []
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    assert isinstance(item, tuple)
                    batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._flush(batch)

    def _flush(self, batch: list[tuple[Record, Future[None]]]) -> None:
        records = [record for record, _ in batch]
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._write(records)  # idempotent on request_id, so a retry is safe
                break
            except Exception as exc:
                if attempt == ATTEMPTS:
                    logger.exception("could not store %d usage records", len(batch))
                    for _, fut in batch:
                        fut.set_exception(exc)
                    return
                logger.warning("storing usage records failed (try %d): %s", attempt, exc)
                time.sleep(0.05 * 2**attempt)
        for _, fut in batch:
            fut.set_result(None)
