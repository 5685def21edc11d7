"""A write-ahead journal of usage records: durable at once, stored in batches.

The gateway appends each finished request's usage record to its journal (one JSON line,
one ``write`` call) before the client sees the end of the answer, and its usage writer
stores the records in the database in batches. A line written is in the kernel's page
cache, so it survives a ``kill -9`` of the gateway (the guarantee SQLite's WAL with
``synchronous=NORMAL`` gives as well). A journal left behind by a dead gateway is
replayed into the store by the next gateway to start and by ``zhisuan usage``; replays
are idempotent, since ``add_usage`` skips request ids already stored.

Each gateway process writes its own file and holds an exclusive ``flock`` on it while it
runs, so a replay never touches a live gateway's journal. A file is emptied once every
record in it is stored and it has grown past :data:`ROTATE_BYTES`, and deleted on a clean
shutdown.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

JOURNAL_DIR = "usage-journal"
"""The journals' directory under the platform home."""
ROTATE_BYTES = 1 << 20
REPLAY_BATCH = 500
Record = Mapping[str, Any]


class UsageJournal:
    """This process's journal file in ``directory`` (created; held until :meth:`close`)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        claiming = directory / f"{name}.new"
        self.path = directory / f"{name}.jsonl"
        self._fd = os.open(claiming, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # before the name a replay looks for exists
        claiming.rename(self.path)
        self._lock = threading.Lock()
        self._pending = 0
        self._size = 0

    def append(self, record: Record) -> None:
        """Write ``record`` through to the file (not fsynced: durable against a crash of
        this process, not of the machine)."""
        self.append_line(encode_line(record))

    def append_line(self, line: bytes) -> None:
        """Write one record already encoded (a JSON object and a newline) through to the
        file."""
        with self._lock:
            os.write(self._fd, line)
            self._pending += 1
            self._size += len(line)

    def stored(self, count: int) -> None:
        """``count`` appended records are in the store now."""
        with self._lock:
            self._pending -= count
            if self._pending == 0 and self._size > ROTATE_BYTES and self._fd >= 0:
                os.ftruncate(self._fd, 0)
                self._size = 0

    @property
    def pending(self) -> int:
        """Records appended and not yet stored."""
        return self._pending

    def close(self) -> None:
        """Release the file; it is deleted when every record in it is stored."""
        with self._lock:
            if self._fd < 0:
                return
            if self._pending == 0:
                self.path.unlink(missing_ok=True)
            else:
                logger.warning("%d usage records left in %s for replay", self._pending, self.path)
            os.close(self._fd)
            self._fd = -1


def replay(
    directory: Path, add_usage: Callable[[Iterable[Record]], int], *, live: bool = False
) -> int:
    """Store the records of every journal in ``directory`` that no live gateway holds.

    Args:
        directory: the journals' directory (nothing happens if it does not exist).
        add_usage: the store's ``add_usage``.
        live: store the records of live gateways' journals too, leaving the files to
            them (a reader's view of everything recorded so far; their writers skip
            what is stored already).

    Returns:
        How many records were not stored before.
    """
    if not directory.is_dir():
        return 0
    added = 0
    for path in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # replayed by someone else meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                orphan = True
            except BlockingIOError:
                orphan = False  # a live gateway's
            if not (orphan or live):
                continue
            with os.fdopen(os.dup(fd), "rb") as f:
                records = list(_parse(f, path, complete_only=not orphan))
            for start in range(0, len(records), REPLAY_BATCH):
                added += add_usage(records[start : start + REPLAY_BATCH])
            if orphan:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    if added:
        logger.info("replayed %d usage records from journals in %s", added, directory)
    return added


def _parse(lines: Iterable[bytes], path: Path, complete_only: bool) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, 1):
        if complete_only and not line.endswith(b"\n"):
            return  # being written right now
        try:
            record = json.loads(line)
        except ValueError:
            logger.warning("skipping a torn line %d of %s", number, path)
            continue
        created_at = record.get("created_at")
        if isinstance(created_at, str):
            record["created_at"] = datetime.fromisoformat(created_at)
        elif isinstance(created_at, int | float):  # epoch seconds, as the gateway writes
            record["created_at"] = datetime.fromtimestamp(created_at, UTC)
        yield record


def encode_line(record: Record) -> bytes:
    """``record`` as a journal line: compact JSON and a newline."""
    return (_ENCODER.encode(record) + "\n").encode()


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot journal {type(value).__name__}")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_encode)
