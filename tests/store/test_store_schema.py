"""Migrations: a fresh database reaches head, matches the ORM, and is not migrated twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from zhisuan.errors import UserError
from zhisuan.store import HEAD, Base, Store, alembic_config, current_revision, make_engine, upgrade


def test_head_constant_matches_newest_revision() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_heads() == [HEAD], "bump zhisuan.store.migrations.HEAD"


def test_fresh_database_reaches_head_once(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert upgrade(engine) is True
        assert upgrade(engine) is False  # already at head: nothing runs
        with engine.connect() as conn:
            assert current_revision(conn) == HEAD
            assert {"models", "deployments"} <= set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_migrations_match_the_orm(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_downgrade_to_base_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        with engine.connect() as conn:
            assert "models" not in inspect(conn).get_table_names()
        assert upgrade(engine) is True
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'z.db'}") as store, store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000


def test_sqlite_parent_directory_is_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'z.db'}"
    with Store.open(url) as store:
        assert store.list_models() == []
    assert (tmp_path / "a" / "b" / "z.db").is_file()


def test_concurrent_opens_of_a_fresh_home(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'z.db'}"
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            Store.open(url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_plain_postgresql_url_gets_psycopg() -> None:
    engine = make_engine("postgresql://u:p@127.0.0.1:1/db")
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()


def test_unreachable_database_is_a_user_error() -> None:
    with pytest.raises(
        UserError, match=r"cannot open the database postgresql\+psycopg://u:\*\*\*@"
    ):
        Store.open("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=2")


@pytest.mark.parametrize("url", ["nonsense", "mysqlx://h/db"])
def test_malformed_database_url_is_a_user_error(url: str) -> None:
    with pytest.raises(UserError, match="invalid database URL") as info:
        Store.open(url)
    assert info.value.hint is not None and "ZHISUAN_DATABASE_URL" in info.value.hint
