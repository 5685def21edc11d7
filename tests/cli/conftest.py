"""Fixtures of the command-line tests: a temporary home, on each database (a SQLite file, and
PostgreSQL in a fresh schema when ZHISUAN_TEST_POSTGRES_URL is set), and no gateway."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home_env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point zhisuan at a temporary home and ``db_url``; no gateway listens on its port."""
    monkeypatch.setenv("ZHISUAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZHISUAN_DATABASE_URL", db_url)
    monkeypatch.setenv("ZHISUAN_PORT", str(_free_port()))
    monkeypatch.delenv("ZHISUAN_ADMIN_KEY", raising=False)
    return db_url
