"""Fixtures of the command-line tests: a temporary home, on each database (a SQLite file, and
PostgreSQL in a fresh schema when ZHISUAN_TEST_POSTGRES_URL is set), and no gateway."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


# Same database matrix as tests/store: SQLite file, and PostgreSQL in a fresh schema.
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zhisuan.db'}"
        return
    base = os.environ.get("ZHISUAN_TEST_POSTGRES_URL")
    if not base:
        pytest.skip(
            "ZHISUAN_TEST_POSTGRES_URL is not set (make test starts PostgreSQL and sets it)"
        )
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


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
