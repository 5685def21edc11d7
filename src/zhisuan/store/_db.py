"""Engines, sessions and schema migrations.

SQLite (the default, a file in the home directory) runs in WAL mode with foreign keys on and a
busy timeout, so the gateway and the CLI can use the same file at once. PostgreSQL is reached
through psycopg 3 (``postgresql+psycopg://``; a bare ``postgresql://`` URL is upgraded to it).

The schema is brought to the newest Alembic revision when a store is opened. To keep the
gateway's cold start short, the revision recorded in the database is first compared with
:data:`zhisuan.store.migrations.HEAD` using one query; Alembic is imported only when they
differ. Concurrent openers are serialised (a lock file next to the SQLite file, held for the
check too; an advisory lock on PostgreSQL) so two processes starting on a fresh home do not
race.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.pool import StaticPool

from zhisuan.store.migrations import HEAD

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Arbitrary constant for pg_advisory_xact_lock: "zhisuan" schema upgrades.
_PG_LOCK_KEY = 0x7A6873756E


def normalize_url(url: str) -> URL:
    """Parse a database URL, choosing psycopg 3 for PostgreSQL.

    Args:
        url: an SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``, ``postgresql+psycopg://…``).

    Returns:
        The parsed URL with the driver filled in.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable enough under WAL, much faster
    finally:
        cur.close()


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with zhisuan's connection settings.

    Args:
        url: an SQLAlchemy URL. For a SQLite file, the parent directory is created.

    Returns:
        The engine (no connection is opened yet).
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            # One shared connection, or every session would see its own empty database.
            engine = create_engine(
                parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def alembic_config(engine_or_url: Engine | str) -> Config:
    """An Alembic config for the migrations shipped in the package (no ``alembic.ini``).

    Engineers adding a revision can use it directly, e.g.
    ``alembic.command.revision(alembic_config(url), "add tenants", autogenerate=True)``.

    Args:
        engine_or_url: the engine or database URL to migrate.

    Returns:
        The config; ``script_location`` points at ``zhisuan/store/migrations``.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if isinstance(engine_or_url, Engine):
        url = engine_or_url.url.render_as_string(hide_password=False)
    else:
        url = normalize_url(engine_or_url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def current_revision(conn: Connection) -> str | None:
    """The Alembic revision recorded in the database, or None for an empty database."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else ",".join(sorted(rows)) or None


@contextlib.contextmanager
def _upgrade_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        lock_path = Path(database).expanduser().with_name(Path(database).name + ".migrate.lock")
        try:
            fh = lock_path.open("a")
        except OSError:  # a read-only home: nothing here can migrate it, so nothing to order
            yield
            return
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest revision (Alembic ``upgrade head``), if needed.

    Args:
        engine: the database to migrate.

    Returns:
        True when migrations ran, False when the database was already at head.
    """
    # The check, too, runs under the lock: the first connection to a fresh SQLite file
    # turns it to WAL, which needs the file to itself, and an opener reading beside it
    # could be refused at once ("database is locked") rather than made to wait.
    with _upgrade_lock(engine):
        with engine.connect() as conn:
            if current_revision(conn) == HEAD:
                return False
        return _migrate(engine)


def _migrate(engine: Engine) -> bool:
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        before = current_revision(conn)
        if before == HEAD:
            return False
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        log.info("migrating database schema from %s to %s", before or "empty", HEAD)
        command.upgrade(cfg, "head")
    return True
