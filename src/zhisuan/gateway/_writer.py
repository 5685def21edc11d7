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
cuts the linger short. Keys seen in use (:meth:`UsageWriter.used`) have their
``last_used_at`` set with the batch, in one statement.

A failed commit is retried at once (:data:`ATTEMPTS` tries in all). A batch that fails every
try is *held*: it stays in the journal (which the next start replays), and the writer tries
it again while the gateway runs, after :data:`BACKOFF_S`, doubling up to
:data:`MAX_BACKOFF_S` (or at once for a reader's :meth:`UsageWriter.sync`, and on close).
Batches that come meanwhile are held behind it, so the records reach the store in order,
and a store that still refuses costs two tries a round, not one per batch. Writing a record
twice is harmless: the store skips a ``request_id`` it has (the key the replay relies on
too). A held batch the store refuses again right after it took a later one is left to the
journal, so one bad record holds nothing up; so are the oldest when more than
:data:`MAX_HELD` records are held. One error is logged when the store starts refusing, and
one line when it has taken the held records.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from zhisuan.store.journal import UsageJournal, encode_line

logger = logging.getLogger(__name__)

Record = dict[str, Any]
_STOP = object()
ATTEMPTS = 4
LINGER_S = 1.0
BACKOFF_S = 1.0
"""Seconds before held batches (refused in all their tries) are tried again; doubled at
each round the store refuses, up to :data:`MAX_BACKOFF_S`."""
MAX_BACKOFF_S = 30.0
"""The longest wait between two rounds: records that come while the store refuses are
stored at most this long after it takes writes again."""
MAX_HELD = 100_000
"""Records held in memory for another try at most; beyond it the oldest are left to the
journal (replayed at the next start)."""


class UsageWriter:
    """Journal, then background batch writer.

    Args:
        write: stores a batch (called from the writer thread), e.g. ``store.add_usage``;
            it must skip the records whose ``request_id`` it has stored already.
        journal: where records are made durable first (None: only in memory until stored).
        max_batch: records per commit at most.
        linger_s: how long a batch waits for more records after its first one.
        touch: marks keys as used now, by prefix (e.g. ``store.touch_keys``).
        backoff_s: the first wait before held batches are tried again (:data:`BACKOFF_S`).
        max_backoff_s: the longest wait between two rounds (:data:`MAX_BACKOFF_S`).
        max_held: records held for another try at most (:data:`MAX_HELD`).
    """

    def __init__(
        self,
        write: Callable[[list[Record]], object],
        journal: UsageJournal | None = None,
        max_batch: int = 512,
        linger_s: float = LINGER_S,
        touch: Callable[[list[str]], object] | None = None,
        *,
        backoff_s: float = BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        max_held: int = MAX_HELD,
    ) -> None:
        self._write = write
        self._touch = touch
        self._journal = journal
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._held = _Held(backoff_s, max_backoff_s, max_held)
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
        """Wait until every record submitted so far is stored (or ``timeout`` passes).

        Held records are tried again at once. True also where the store refused some:
        they stay held (see :attr:`held`), and in the journal.
        """
        done = threading.Event()
        self._queue.put(done)
        self._urgent.set()
        return done.wait(timeout)

    @property
    def held(self) -> int:
        """Records the store refused in all their tries, waiting to be tried again."""
        return self._held.records

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued (held records get a last try), stop the thread and release
        the journal, which keeps what could not be stored for the next start."""
        self._queue.put(_STOP)
        self._urgent.set()
        self._thread.join(timeout)
        if self._journal is not None:
            self._journal.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                items = [self._queue.get(timeout=self._held.wait_s())]
            except queue.Empty:  # the held batches are due another round
                self._retry(due=True)
                continue
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
                chunk = batch[at : at + self._max_batch]
                if self._held:
                    self._hold(chunk)  # behind the held ones: the store gets them in order
                else:
                    self._flush(chunk)
            if self._held and (synced or stopping or self._held.due()):
                self._retry(due=self._held.due())
            if used and self._touch is not None:
                _mark_used(self._touch, sorted(used))
            for event in synced:
                event.set()

    def _store(self, batch: list[Record]) -> Exception | None:
        """Write ``batch`` once: None when it is stored, else why not."""
        try:
            self._write(batch)  # skips the request ids stored already: a retry is safe
        except Exception as exc:
            return exc
        if self._journal is not None:
            self._journal.stored(len(batch))
        return None

    def _flush(self, batch: list[Record]) -> None:
        error: Exception | None = None
        for attempt in range(1, ATTEMPTS + 1):
            error = self._store(batch)
            if error is None:
                return
            logger.debug("storing usage records failed (try %d): %s", attempt, error)
            if attempt < ATTEMPTS:
                time.sleep(0.05 * 2**attempt)
        self._held.start()
        self._hold(batch)
        logger.error(
            "could not store %d usage records in %d tries (%s): they stay in the journal, and "
            "the writer tries them and the records after them again from %g s on",
            len(batch),
            ATTEMPTS,
            error,
            self._held.delay_s,
            exc_info=error,
        )

    def _hold(self, batch: list[Record]) -> None:
        dropped = self._held.add(batch)
        if dropped and dropped == self._held.overflow:
            logger.warning(  # once per episode: the first time
                "over %d usage records wait for the store: the oldest are left to the "
                "journal, which the next start replays",
                self._held.max_records,
            )

    def _retry(self, *, due: bool) -> None:
        """One round: the held batches tried once each, oldest first.

        The round ends at two refusals in a row (the store still refuses: no use trying
        every batch). A batch refused before one the store takes is tried once more then;
        refused again, it is the store's to refuse, not a store that is down, and is left
        to the journal, so it holds up no record behind it. ``due``: the back-off is over (a
        round for a reader, or the last one on close, leaves it as it is when it fails).
        """
        held = self._held
        refused: list[tuple[list[Record], Exception]] = []  # in a row, since the last stored
        while held.batches and len(refused) < 2:
            batch = held.batches.popleft()
            error = self._store(batch)
            if error is not None:
                refused.append((batch, error))
                continue
            held.stored(len(batch))
            for left, _ in refused:  # refused just before the store took writes again?
                why = self._store(left)
                if why is None:
                    held.stored(len(left))
                    continue
                held.let_go(len(left))
                logger.warning(
                    "the store refused %d usage records twice while it took later ones (%s): "
                    "they are left to the journal, which the next start replays",
                    len(left),
                    why,
                )
            refused.clear()
        held.batches.extendleft(batch for batch, _ in reversed(refused))
        if not held:
            logger.info(
                "stored %d usage records held back since the store refused them %.0f s ago "
                "(%d left to the journal)",
                held.episode_stored,
                time.monotonic() - held.since,
                held.left,
            )
        elif due:
            held.refused()
            logger.debug("the store still refuses usage records: %s", refused[-1][1])


class _Held:
    """The batches the store refused in all their tries, oldest first, and when to try
    them again: one *episode* from the first refusal until every one is stored (or left to
    the journal)."""

    def __init__(self, backoff_s: float, max_backoff_s: float, max_records: int) -> None:
        self.batches: deque[list[Record]] = deque()
        self.records = 0
        self.max_records = max_records
        self.since = 0.0  # time.monotonic() at the episode's first refusal
        self.episode_stored = 0
        self.left = 0  # records of the episode left to the journal
        self.overflow = 0  # those of them let go for room
        self.delay_s = backoff_s
        self._first_s = backoff_s
        self._max_s = max_backoff_s
        self._retry_at = 0.0

    def __bool__(self) -> bool:
        return bool(self.batches)

    def start(self) -> None:
        """An episode starts: the first round is :attr:`delay_s` from now."""
        self.since = time.monotonic()
        self.delay_s = self._first_s
        self._retry_at = self.since + self.delay_s
        self.episode_stored = self.left = self.overflow = 0

    def refused(self) -> None:
        """A due round found the store refusing: wait twice as long (up to the most)."""
        self.delay_s = min(self.delay_s * 2, self._max_s)
        self._retry_at = time.monotonic() + self.delay_s

    def add(self, batch: list[Record]) -> int:
        """Hold ``batch`` last; returns how many of the oldest records were let go for it."""
        self.batches.append(batch)
        self.records += len(batch)
        dropped = 0
        while self.records > self.max_records and len(self.batches) > 1:
            oldest = len(self.batches.popleft())
            self.let_go(oldest)
            dropped += oldest
        self.overflow += dropped
        return dropped

    def stored(self, count: int) -> None:
        """``count`` held records are stored now."""
        self.records -= count
        self.episode_stored += count

    def let_go(self, count: int) -> None:
        """``count`` records taken out of :attr:`batches` are left to the journal."""
        self.records -= count
        self.left += count

    def due(self) -> bool:
        return bool(self.batches) and time.monotonic() >= self._retry_at

    def wait_s(self) -> float | None:
        """How long the writer may wait for records before a round (None: no end)."""
        if not self.batches:
            return None
        return max(0.0, self._retry_at - time.monotonic())


def _mark_used(touch: Callable[[list[str]], object], prefixes: list[str]) -> None:
    try:
        touch(prefixes)
    except Exception as exc:  # only the keys' last-used time: not worth a retry
        logger.warning("could not mark %d key(s) as used: %s", len(prefixes), exc)
