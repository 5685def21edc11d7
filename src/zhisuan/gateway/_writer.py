"""Usage records reach the store through a journal and one writer thread that commits in batches.

:meth:`UsageWriter.submit` appends the record to the process's journal at once (see
:mod:`zhisuan.store.journal`), so a request that ends normally has a durable record before
the client sees the end of its answer, at the cost of one ``write`` call. The gateway
splits the two steps: :meth:`UsageWriter.journal` before the answer ends, with a line it
encodes itself, and :meth:`UsageWriter.enqueue` after. The writer
thread then stores records in batches: it waits ``linger_s`` after the first record of a
batch and takes everything queued by then, so one commit carries many records and the
database's per-commit cost (about 2 ms of CPU through SQLAlchemy, whatever the batch's
size) is not paid per request. It sleeps through the linger rather than waking for each
record, and readers that need every record so far call :meth:`UsageWriter.sync`, which
cuts the linger short. A failed commit is retried; records that still cannot be stored
stay in the journal, which the next start replays. Keys seen in use (:meth:`UsageWriter.used`)
have their ``last_used_at`` set with the batch, in one statement.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from zhisuan.store.journal import UsageJournal, encode_line

logger = logging.getLogger(__name__)

Record = dict[str, Any]
_STOP = object()
ATTEMPTS = 4
LINGER_S = 1.0


class UsageWriter:
    """Journal, then background batch writer.

    Args:
        write: stores a batch (called from the writer thread), e.g. ``store.add_usage``.
        journal: where records are made durable first (None: only in memory until stored).
        max_batch: records per commit at most.
        linger_s: how long a batch waits for more records after its first one.
        touch: marks keys as used now, by prefix (e.g. ``store.touch_keys``).
    """

    def __init__(
        self,
        write: Callable[[list[Record]], object],
        journal: UsageJournal | None = None,
        max_batch: int = 512,
        linger_s: float = LINGER_S,
        touch: Callable[[list[str]], object] | None = None,
    ) -> None:
        self._write = write
        self._touch = touch
        self._journal = journal
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._queue: queue.SimpleQueue[Record | threading.Event | str | object] = (
            queue.SimpleQueue()
        )
        self._urgent = threading.Event()  # end the linger now (a reader waits, or stopping)
        self._submitted = 0  # written by submitters only
        self._taken = 0  # written by the writer thread only
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def submit(self, record: Record) -> None:
        """Journal ``record`` (durable on return) and queue it for the store."""
        self.journal(encode_line(record))
        self.enqueue(record)

    def journal(self, line: bytes) -> None:
        """Journal one record encoded as :func:`zhisuan.store.journal.encode_line` does
        (durable on return); :meth:`enqueue` must follow with the same record."""
        if self._journal is not None:
            self._journal.append_line(line)

    def enqueue(self, record: Record) -> None:
        """Queue a journaled record for the store."""
        self._queue.put(record)
        self._submitted += 1
        if self._submitted - self._taken >= self._max_batch:
            self._urgent.set()

    def used(self, prefix: str) -> None:
        """Note that the key ``prefix`` was used (stored with the next batch)."""
        self._queue.put(prefix)

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far is stored (or ``timeout`` passes)."""
        done = threading.Event()
        self._queue.put(done)
        self._urgent.set()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, stop the thread and release the journal."""
        self._queue.put(_STOP)
        self._urgent.set()
        self._thread.join(timeout)
        if self._journal is not None:
            self._journal.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            self._urgent.wait(self._linger_s)
            self._urgent.clear()
            with contextlib.suppress(queue.Empty):
                while True:
                    items.append(self._queue.get_nowait())
            batch: list[Record] = []
            synced: list[threading.Event] = []
            used: set[str] = set()
            for item in items:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, threading.Event):
                    synced.append(item)
                elif isinstance(item, str):
                    used.add(item)
                else:
                    assert isinstance(item, dict)
                    batch.append(item)
            self._taken += len(batch)
            for at in range(0, len(batch), self._max_batch):
                self._flush(batch[at : at + self._max_batch])
            if used and self._touch is not None:
                _mark_used(self._touch, sorted(used))
            for event in synced:
                event.set()

    def _flush(self, batch: list[Record]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._write(batch)  # idempotent on request_id, so a retry is safe
                break
            except Exception as exc:
                if attempt == ATTEMPTS:
                    logger.exception(
                        "could not store %d usage records; they stay in the journal", len(batch)
                    )
                    return
                logger.warning("storing usage records failed (try %d): %s", attempt, exc)
                time.sleep(0.05 * 2**attempt)
        if self._journal is not None:
            self._journal.stored(len(batch))


def _mark_used(touch: Callable[[list[str]], object], prefixes: list[str]) -> None:
    try:
        touch(prefixes)
    except Exception as exc:  # only the keys' last-used time: not worth a retry
        logger.warning("could not mark %d key(s) as used: %s", len(prefixes), exc)
