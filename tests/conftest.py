"""Test-wide settings (offline model loading) and the database matrix.

``db_url`` gives every store-backed test both databases: a SQLite file, and PostgreSQL in a
fresh schema per test at ``ZHISUAN_TEST_POSTGRES_URL`` (``make test`` starts it with
``scripts/pg-up.sh``; without it the PostgreSQL cases skip with a reason).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
