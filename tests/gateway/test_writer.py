"""The usage writer journals every record at once and stores them in batches."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from zhisuan.gateway._writer import UsageWriter
from zhisuan.store.journal import UsageJournal


def test_batches_every_record(tmp_path: Path) -> None:
    batches: list[int] = []
    gate = threading.Event()

    def write(records: list[dict[str, Any]]) -> None:
        gate.wait(5)
        batches.append(len(records))

    journal = UsageJournal(tmp_path)
    writer = UsageWriter(write, journal)
    for i in range(100):
        writer.submit({"request_id": str(i)})
    assert journal.pending == 100  # durable in the journal before any commit
    gate.set()
    assert writer.sync(timeout=5)
    assert sum(batches) == 100
    assert len(batches) < 100  # records that queued up together went in one commit
    assert journal.pending == 0
    writer.close()
    assert list(tmp_path.iterdir()) == []  # a clean close removes the journal


def test_retries_then_succeeds() -> None:
    attempts = [0]

    def write(records: list[dict[str, Any]]) -> None:
        attempts[0] += 1
        if attempts[0] < 3:
            raise RuntimeError("database is locked")

    writer = UsageWriter(write, linger_s=0.0)
    writer.submit({"request_id": "x"})
    assert writer.sync(timeout=5)
    writer.close()
    assert attempts[0] == 3


def test_records_that_cannot_be_stored_stay_in_the_journal(tmp_path: Path) -> None:
    def write(records: list[dict[str, Any]]) -> None:
        raise RuntimeError("disk full")

    journal = UsageJournal(tmp_path)
    writer = UsageWriter(write, journal, linger_s=0.0)
    writer.submit({"request_id": "kept"})
    assert writer.sync(timeout=10)
    writer.close()
    [left] = tmp_path.iterdir()
    assert b'"request_id":"kept"' in left.read_bytes()


def test_stores_on_its_own_after_the_linger() -> None:
    stored = threading.Event()
    writer = UsageWriter(lambda records: stored.set(), linger_s=0.05)
    writer.submit({"request_id": "a"})
    assert not stored.is_set()  # lingering for more records to join the batch
    assert stored.wait(5)
    writer.close()


def test_a_reader_or_a_full_batch_cuts_the_linger_short() -> None:
    batches: list[int] = []
    full = threading.Event()

    def write(records: list[dict[str, Any]]) -> None:
        batches.append(len(records))
        if len(records) == 4:
            full.set()

    writer = UsageWriter(write, max_batch=4, linger_s=60.0)
    for i in range(4):
        writer.submit({"request_id": str(i)})
    assert full.wait(5)  # not after a minute
    writer.submit({"request_id": "last"})
    assert writer.sync(timeout=5)
    assert batches == [4, 1]
    writer.close()


def test_keys_in_use_are_marked_once_per_batch_and_a_failure_loses_no_record() -> None:
    stored: list[str] = []
    touched: list[list[str]] = []

    def touch(prefixes: list[str]) -> None:
        touched.append(prefixes)
        if len(touched) == 2:
            raise RuntimeError("database is locked")

    writer = UsageWriter(lambda rs: stored.extend(r["request_id"] for r in rs), touch=touch)
    for prefix in ("zs-b", "zs-a", "zs-b"):
        writer.used(prefix)
    writer.submit({"request_id": "one"})
    assert writer.sync(timeout=5)
    assert touched == [["zs-a", "zs-b"]]  # one call for the batch, each key once
    writer.used("zs-c")  # its touch fails: a warning, and the writer goes on
    writer.submit({"request_id": "two"})
    assert writer.sync(timeout=5)
    writer.submit({"request_id": "three"})
    assert writer.sync(timeout=5)
    writer.close()
    assert stored == ["one", "two", "three"] and touched[1] == ["zs-c"]
