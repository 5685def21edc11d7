"""The store's tests run on both databases: a SQLite file, and PostgreSQL (in a fresh schema
per test) at ``ZHISUAN_TEST_POSTGRES_URL`` — ``make test`` starts it with scripts/pg-up.sh."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zhisuan.store import Store


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        yield s
