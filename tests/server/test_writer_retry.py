"""Usage records the store refused in all their tries are stored later while the gateway
runs: a real SQLite store refuses them (a trigger another connection adds, as a locked or
full database would) and then takes them again, in order and each once.

The first tests drive the gateway's :class:`UsageWriter` over a real store in-process; the
last one drives a real ``zhisuan serve``, whose writer has the default back-off.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.server._serve import Server, start_server
from zhisuan.gateway._writer import UsageWriter
from zhisuan.store import Store
from zhisuan.store.journal import UsageJournal, replay

REFUSE = (
    "CREATE TRIGGER refuse BEFORE INSERT ON usage_records {when} "
    "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
)
WAIT_S = 60.0  # a bound for what the writer does on its own, never a speed to assert


def _refuse(db: Path, when: str = "") -> None:
    """Make the store refuse every usage record (``when``: only those it matches)."""
    with sqlite3.connect(db) as conn:
        conn.execute(REFUSE.format(when=when))


def _accept(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER refuse")


def _stored(db: Path) -> list[str]:
    """Request ids in the order they were stored."""
    with sqlite3.connect(db) as conn:
        return [r for (r,) in conn.execute("SELECT request_id FROM usage_records ORDER BY id")]


def _record(request_id: str) -> dict[str, object]:
    return {
        "request_id": request_id,
        "tenant": "acme",
        "model": "m",
        "endpoint": "/v1/chat/completions",
        "status": "ok",
        "http_status": 200,
    }


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "zhisuan.db"
    with Store.open(f"sqlite:///{path}"):
        pass  # migrated: the tables exist
    yield path


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{db}") as s:
        yield s


def _wait_for(done: Callable[[], bool], deadline_s: float = WAIT_S) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if done():
            return
        time.sleep(0.02)
    raise AssertionError("the writer did not get there in time")


def test_refused_records_are_stored_in_order_once_the_store_takes_them(
    tmp_path: Path, db: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zhisuan.gateway._writer")
    journal = UsageJournal(tmp_path / "journal")
    writer = UsageWriter(store.add_usage, journal, linger_s=0.0)  # the gateway's back-off
    _refuse(db)
    writer.submit(_record("first"))
    assert writer.sync()
    writer.submit(_record("second"))  # held behind the first, not tried on its own
    assert writer.sync()
    assert (journal.pending, _stored(db)) == (2, [])
    _accept(db)
    _wait_for(lambda: journal.pending == 0)  # no reader asks: the writer tries by itself
    assert _stored(db) == ["first", "second"]
    writer.close()
    assert list((tmp_path / "journal").iterdir()) == []  # all stored: nothing to replay
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in said] == [logging.ERROR, logging.INFO]  # once an episode
    assert said[0][1].startswith("could not store 1 usage records in 4 tries (")
    assert said[1][1].startswith("stored 2 usage records held back since the store refused")


def test_a_record_stored_meanwhile_is_not_stored_twice(
    tmp_path: Path, db: Path, store: Store
) -> None:
    journals = tmp_path / "journal"
    writer = UsageWriter(store.add_usage, UsageJournal(journals), linger_s=0.0, backoff_s=3600)
    _refuse(db)
    writer.submit(_record("one"))
    writer.submit(_record("two"))
    assert writer.sync()
    assert writer.held == 2
    _accept(db)
    # ``zhisuan usage`` replays the live journals, so the held records are stored already
    assert replay(journals, store.add_usage, live=True) == 2
    assert writer.sync()  # a reader's sync tries the held batch at once: skipped, not doubled
    assert writer.held == 0
    writer.close()
    assert _stored(db) == ["one", "two"]
    assert list(journals.iterdir()) == []


def test_a_record_the_store_keeps_refusing_holds_up_no_other(
    tmp_path: Path, db: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    journals = tmp_path / "journal"
    writer = UsageWriter(store.add_usage, UsageJournal(journals), linger_s=0.0, backoff_s=3600)
    _refuse(db, when="WHEN NEW.request_id = 'bad'")
    writer.submit(_record("bad"))
    assert writer.sync()
    assert writer.held == 1
    for name in ("after", "later"):
        writer.submit(_record(name))
        assert writer.sync()
    assert writer.held == 0  # stored behind it, and the bad one is left to the journal
    assert _stored(db) == ["after", "later"]
    writer.close()
    [left] = journals.iterdir()  # for the next start's replay
    assert b'"request_id":"bad"' in left.read_bytes()
    assert any("refused 1 usage records twice" in r.getMessage() for r in caplog.records)


@pytest.mark.server
def test_a_running_gateway_stores_what_the_store_refused_for_a_while(tmp_path: Path) -> None:
    srv: Server = start_server(tmp_path / "home", "--log-level", "info")
    try:
        srv.wait_ready(timeout=60)
        db = srv.home / "zhisuan.db"
        _refuse(db)
        body = {"model": "not-deployed", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(f"{srv.url}/v1/chat/completions", json=body, timeout=30)
        assert answer.status_code == 404  # refused at the gateway: a "rejected" record
        _wait_for(lambda: "could not store 1 usage records" in srv.log.read_text())
        _accept(db)
        _wait_for(lambda: len(_stored(db)) == 1)  # no reader asks for it
        log = srv.log.read_text()
        assert log.count("could not store") == 1
        assert log.count("usage records held back") == 1
    finally:
        srv.stop()
