"""A write-ahead journal of usage records: durable at once, stored in batches.

The gateway appends each finished request's usage record to its journal (one JSON line,
copied into the file's memory mapping) before the client sees the end of the answer, and
its usage writer stores the records in the database in batches. A line written is in the
kernel's page cache, so it survives a ``kill -9`` of the gateway (the guarantee SQLite's WAL with
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
import mmap
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
"""A journal whose lines are all stored starts again once it is past this size."""
CHUNK_BYTES = 1 << 20
"""The journal file grows by this much at a time."""
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # map the pages at once, not on first write
REPLAY_BATCH = 500
Record = Mapping[str, Any]


class UsageJournal:
    """This process's journal file in ``directory`` (created; held until :meth:`close`).

    The file is mapped into memory and a line is copied into the mapping: it is in the
    page cache then, as it would be after a ``write`` call, without the system call. The
    file grows by :data:`CHUNK_BYTES` at a time, zero-filled past the last line; it is cut
    back to its lines on :meth:`close`.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        claiming = directory / f"{name}.new"
        self.path = directory / f"{name}.jsonl"
        self._fd = os.open(claiming, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # before the name a replay looks for exists
        claiming.rename(self.path)
        self._lock = threading.Lock()
        self._pending = 0
        self._end = 0  # bytes of lines in the file
        self._map = self._mapping(CHUNK_BYTES)

    def _mapping(self, size: int) -> mmap.mmap:
        os.ftruncate(self._fd, size)
        return mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED | _POPULATE)

    def append(self, record: Record) -> None:
        """Write ``record`` through to the file (not fsynced: durable against a crash of
        this process, not of the machine)."""
        self.append_line(encode_line(record))

    def append_line(self, line: bytes) -> None:
        """Write one record already encoded (a JSON object and a newline) through to the
        file."""
        with self._lock:
            start = self._end
            end = start + len(line)
            if end > len(self._map):
                start, end = self._make_room(len(line))
            self._map[start:end] = line
            self._end = end
            self._pending += 1

    def _make_room(self, length: int) -> tuple[int, int]:
        """Where a line of ``length`` bytes goes: the file's start again when every line in
        it is stored, else after the last one in a larger file."""
        self._map.close()
        if self._pending == 0:
            self._end = 0
            os.ftruncate(self._fd, 0)  # the stored lines go, the pages with them
        size = CHUNK_BYTES
        while size < self._end + length:
            size *= 2
        self._map = self._mapping(size)
        return self._end, self._end + length

    def stored(self, count: int) -> None:
        """``count`` appended records are in the store now."""
        with self._lock:
            self._pending -= count
            if self._pending == 0 and self._end > ROTATE_BYTES and self._fd >= 0:
                self._make_room(0)

    @property
    def pending(self) -> int:
        """Records appended and not yet stored."""
        return self._pending

    def close(self) -> None:
        """Release the file; it is deleted when every record in it is stored."""
        with self._lock:
            if self._fd < 0:
                return
            self._map.close()
            if self._pending == 0:
                self.path.unlink(missing_ok=True)
            else:
                os.ftruncate(self._fd, self._end)
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
                text = f.read()
            nul = text.find(b"\0")  # a killed gateway's file: zeros after its last line
            lines = (text if nul < 0 else text[:nul]).splitlines(keepends=True)
            records = list(_parse(lines, path, complete_only=not orphan))
            for start in range(0, len(records), REPLAY_BATCH):
                added += add_usage(records[start : start + REPLAY_BATCH])
            if orphan:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    if added:
        logger.info("replayed %d usage records from journals in %s", added, directory)
    return added


Rates = tuple[float | None, float | None, float, float]
"""A replica's price per million input tokens and per million output tokens (None: not
priced by tokens), its device's cost per hour and its power in watts."""


def cost_of(rates: Rates, prompt_tokens: int, completion_tokens: int, device_s: float) -> float:
    """A request's cost: by tokens where the replica is priced by tokens, else its share of
    the device's hourly cost."""
    price_in, price_out, per_hour, _ = rates
    if price_in is not None or price_out is not None:
        return (prompt_tokens * (price_in or 0.0) + completion_tokens * (price_out or 0.0)) / 1e6
    return per_hour * device_s / 3600.0


def derive(facts: dict[str, Any]) -> dict[str, Any]:
    """The usage record a journal line's facts make.

    The gateway journals facts: the clock (``t``, epoch nanoseconds), TTFT and latency in
    microseconds, device time in nanoseconds, measured energy in millijoules (null where it
    is estimated) and the replica's ``rates``. The record's times in milliseconds, TPOT,
    cost and energy are derived from them here, for the store after the answer is sent and
    at replay alike. A line of the earlier form, figures included, is returned as it is.
    """
    if "latency_us" not in facts:
        return facts
    record = dict(facts)
    rates: Rates = tuple(record.pop("rates"))
    ttft_us: int | None = record.pop("ttft_us")
    latency_us: int = record.pop("latency_us")
    energy_mj: int | None = record.pop("energy_mj")
    device_s = record.pop("device_ns") / 1e9
    completion = record["completion_tokens"]
    record["created_at"] = datetime.fromtimestamp(record.pop("t") / 1e9, UTC)
    record["ttft_ms"] = None if ttft_us is None else ttft_us / 1000.0
    record["tpot_ms"] = (
        None
        if ttft_us is None or completion < 2
        else (latency_us - ttft_us) / 1000.0 / (completion - 1)
    )
    record["latency_ms"] = latency_us / 1000.0
    record["device_s"] = device_s
    record["cost"] = cost_of(rates, record["prompt_tokens"], completion, device_s)
    if energy_mj is None:
        record["energy_wh"] = device_s * rates[3] / 3600.0
        record["energy_source"] = "estimated"
    else:
        record["energy_wh"] = energy_mj / 3.6e6
        record["energy_source"] = "measured"
    return record


def _parse(lines: Iterable[bytes], path: Path, complete_only: bool) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, 1):
        if complete_only and not line.endswith(b"\n"):
            return  # being written right now
        try:
            record = derive(json.loads(line))
        except (ValueError, KeyError, TypeError):
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
