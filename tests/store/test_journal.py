"""The usage journal: durable at once, replayed exactly once into the store."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from zhisuan.store import Store
from zhisuan.store import journal as jn
from zhisuan.store.journal import UsageJournal, replay


@pytest.fixture
def journals(tmp_path: Path) -> Path:
    return tmp_path / "usage-journal"


def record(rid: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "created_at": datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
        "tenant": "t",
        "model": "m",
        "endpoint": "chat.completions",
        "status": "ok",
        "http_status": 200,
        "prompt_tokens": 5,
        "completion_tokens": 7,
        **extra,
    }


def test_a_killed_writers_journal_is_replayed_once(journals: Path, store: Store) -> None:
    code = (
        "import os, sys, datetime\n"
        "from pathlib import Path\n"
        "from zhisuan.store.journal import UsageJournal\n"
        "j = UsageJournal(Path(sys.argv[1]))\n"
        "for i in range(3):\n"
        "    j.append({'request_id': f'r{i}', 'tenant': 't', 'model': 'm',"
        " 'endpoint': 'chat.completions', 'status': 'ok', 'http_status': 200,"
        " 'created_at': datetime.datetime.now(datetime.UTC)})\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(journals)], check=False)
    assert replay(journals, store.add_usage) == 3
    assert sorted(r.request_id for r in store.query_usage()) == ["r0", "r1", "r2"]
    assert list(journals.iterdir()) == []
    assert replay(journals, store.add_usage) == 0


def test_a_live_journal_is_read_but_left_alone(journals: Path, store: Store) -> None:
    live = UsageJournal(journals)
    live.append(record("a"))
    assert replay(journals, store.add_usage) == 0  # a replay never takes a live journal
    assert replay(journals, store.add_usage, live=True) == 1  # a reader sees its records
    assert live.path.exists()
    live.stored(1)  # the gateway's own writer stores it too: no double count
    assert store.add_usage([record("a")]) == 0
    live.close()
    assert not live.path.exists()


def _lines(path: Path) -> list[bytes]:
    """The lines in a journal file (the zeros past its last line are no line)."""
    data = path.read_bytes()
    return data.split(b"\0", 1)[0].splitlines()


def test_torn_last_line_and_dates(journals: Path, store: Store) -> None:
    j = UsageJournal(journals)
    j.append(record("whole", prompt_tokens=11))
    torn = b'{"request_id": "torn", "ten'  # the copy of a line the kill cut short
    j._map[j._end : j._end + len(torn)] = torn
    # the writer died: drop its lock without the clean close that would delete the file
    j._map.close()
    os.close(j._fd)
    j._fd = -1
    assert replay(journals, store.add_usage) == 1
    [row] = store.query_usage()
    assert row.request_id == "whole" and row.prompt_tokens == 11
    assert row.created_at.replace(tzinfo=UTC) == datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_rotates_once_everything_is_stored(journals: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(jn, "ROTATE_BYTES", 100)
    j = UsageJournal(journals)
    for i in range(5):
        j.append(record(f"r{i}"))
    j.stored(4)
    assert len(_lines(j.path)) == 5  # one record is not stored yet: nothing is dropped
    j.stored(1)
    assert _lines(j.path) == []
    j.append(record("next"))
    assert len(_lines(j.path)) == 1 and b'"next"' in _lines(j.path)[0]
    j.close()


def test_grows_past_its_first_chunk_and_closes_to_its_lines(
    journals: Path, store: Store, monkeypatch: Any
) -> None:
    monkeypatch.setattr(jn, "CHUNK_BYTES", 512)
    j = UsageJournal(journals)
    for i in range(20):  # several KB of lines: the file doubles a few times
        j.append(record(f"r{i:02d}", error="x" * 50))
    size = j.path.stat().st_size
    assert size > 512 and size & (size - 1) == 0 and size >= j._end
    assert [line[15:18] for line in _lines(j.path)] == [b"r%02d" % i for i in range(20)]
    j.stored(5)
    j.close()  # 15 records are not stored: the file stays, cut back to its lines
    assert j.path.read_bytes().count(b"\0") == 0 and len(_lines(j.path)) == 20
    assert replay(journals, store.add_usage) == 20
