"""Repository methods for usage records, mixed into :class:`zhisuan.store.Store`.

:meth:`UsageStoreMixin.add_usage` is the metering writer's one call: a batch of records in
one transaction, inserted with ``ON CONFLICT (request_id) DO NOTHING`` (multi-row statements
on SQLite, a pipelined executemany on PostgreSQL; about 0.1 s per 2,000 records on either),
so re-sending a batch after a crash or a timeout never counts a request twice. Summaries are
grouped in SQL; days are UTC days on both databases, whatever the session's time zone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Select, case, func, select
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from zhisuan.errors import InvalidParameter
from zhisuan.store._share_checks import as_utc
from zhisuan.store._share_models import (
    ENERGY_SOURCES,
    ERROR_MAX_CHARS,
    USAGE_STATUSES,
    UsageRecord,
)
from zhisuan.store.models import utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

SummaryBy = Literal["model", "key", "day", "tenant"]
SUMMARY_BY: tuple[SummaryBy, ...] = ("model", "key", "day", "tenant")

_REQUIRED = ("request_id", "tenant", "model", "endpoint", "status", "http_status")
_DEFAULTS: dict[str, Any] = {
    "key_prefix": None,
    "replica": None,
    "stream": False,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "ttft_ms": None,
    "tpot_ms": None,
    "latency_ms": 0.0,
    "cost": 0.0,
    "currency": "USD",
    "device_s": 0.0,
    "energy_wh": 0.0,
    "energy_source": "estimated",
    "error": None,
}
_COLUMNS = frozenset((*_REQUIRED, *_DEFAULTS, "created_at"))


class UsageStoreMixin:
    """Usage records: write in batches, read per request, summarise, and sum for quotas."""

    # Set by Store.__init__.
    engine: Engine
    session_factory: sessionmaker[Session]

    def add_usage(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Insert usage records in one transaction, skipping any ``request_id`` already stored.

        Args:
            records: dicts with the :class:`UsageRecord` columns. Required: ``request_id``,
                ``tenant``, ``model``, ``endpoint``, ``status`` (one of
                ``ok|error|client_abort|worker_error|rejected``), ``http_status``; the rest
                default (``created_at`` now, tokens 0, ``energy_source`` ``"estimated"``);
                ``created_at`` may be a datetime or its ISO 8601 string.
                ``error`` is cut to 500 characters.

        Returns:
            How many rows were inserted (duplicates, in the batch or stored, are not).

        Raises:
            ValueError: a record misses a required field, has an unknown one, or an unknown
                ``status``/``energy_source`` — a bug in the caller, not user input.
        """
        rows: dict[str, dict[str, Any]] = {}
        now = utcnow()
        for record in records:
            row = _usage_row(record, now)
            rows.setdefault(row["request_id"], row)
        if not rows:
            return 0
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                inserted = _insert_postgresql(conn, rows)
            else:
                inserted = _insert_sqlite(conn, rows)
        log.debug("stored %d usage record(s) of %d", inserted, len(rows))
        return inserted

    def query_usage(
        self,
        *,
        tenant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        key_prefix: str | None = None,
        limit: int | None = None,
    ) -> list[UsageRecord]:
        """Usage records, oldest first.

        Args:
            tenant: only this tenant's records (the isolation the admin API relies on).
            since: records created at or after this instant (naive = UTC).
            until: records created before this instant.
            model: only this model's records.
            key_prefix: only this key's records.
            limit: at most this many — the *newest* ones, still returned oldest first.

        Returns:
            The records, detached and readable.

        Raises:
            InvalidParameter: ``since`` or ``until`` falls outside years 1-9999 in UTC.
        """
        query = _where(select(UsageRecord), tenant=tenant, since=since, until=until, model=model)
        if key_prefix is not None:
            query = query.where(UsageRecord.key_prefix == key_prefix)
        with self.session_factory() as s:
            if limit is None:
                order = (UsageRecord.created_at, UsageRecord.id)
                return list(s.scalars(query.order_by(*order)))
            newest = query.order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
            return list(reversed(s.scalars(newest.limit(limit)).all()))

    def usage_summary(
        self,
        *,
        by: SummaryBy,
        tenant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
    ) -> list[dict[str, Any]]:
        """Usage totals grouped by model, key, UTC day or tenant (and currency).

        Args:
            by: ``"model"``, ``"key"`` (rows also name the key's ``tenant``), ``"day"``
                (``YYYY-MM-DD`` in UTC) or ``"tenant"``.
            tenant, since, until, model: filters, as in :meth:`query_usage`.

        Returns:
            One dict per group, ordered by the group: ``{by: value, "currency",
            "requests", "refused" (status ``rejected``: refused at the gateway),
            "errors" (any other status but ok: errors, worker errors, client aborts),
            "prompt_tokens", "completion_tokens", "total_tokens", "cost", "energy_wh", "device_s",
            "mean_latency_ms" (of the requests a replica saw: None when every one was
            ``rejected``), "mean_ttft_ms" (None when no request had a first token)}``.

        Raises:
            InvalidParameter: an unknown ``by``, or ``since`` or ``until`` outside years
                1-9999 in UTC.
        """
        if by not in SUMMARY_BY:
            raise InvalidParameter(
                f"cannot group usage by {by!r}",
                param="by",
                hint=f"use one of: {', '.join(SUMMARY_BY)}",
            )
        u = UsageRecord
        names: list[str] = [by, "tenant", "currency"] if by == "key" else [by, "currency"]
        groups: list[ColumnElement[Any]] = [self._group_column(by).label(by)]
        if by == "key":
            groups.append(u.tenant.label("tenant"))
        groups.append(u.currency.label("currency"))
        query: Select[Any] = select(
            *groups,
            func.count().label("requests"),
            func.sum(case((u.status == "rejected", 1), else_=0)).label("refused"),
            func.sum(case((u.status.not_in(("ok", "rejected")), 1), else_=0)).label("errors"),
            func.sum(u.prompt_tokens).label("prompt_tokens"),
            func.sum(u.completion_tokens).label("completion_tokens"),
            func.sum(u.cost).label("cost"),
            func.sum(u.energy_wh).label("energy_wh"),
            func.sum(u.device_s).label("device_s"),
            # refused before a replica saw them, in no time: not the service's latency
            func.avg(case((u.status != "rejected", u.latency_ms))).label("mean_latency_ms"),
            func.avg(u.ttft_ms).label("mean_ttft_ms"),
        )
        query = _where(query, tenant=tenant, since=since, until=until, model=model)
        query = query.group_by(*groups).order_by(*groups)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        out = []
        for r in rows:
            item: dict[str, Any] = {name: r[name] for name in names}
            item["requests"] = int(r["requests"])
            item["refused"] = int(r["refused"] or 0)
            item["errors"] = int(r["errors"] or 0)
            item["prompt_tokens"] = int(r["prompt_tokens"] or 0)
            item["completion_tokens"] = int(r["completion_tokens"] or 0)
            item["total_tokens"] = item["prompt_tokens"] + item["completion_tokens"]
            for key in ("cost", "energy_wh", "device_s"):
                item[key] = float(r[key] or 0.0)
            for key in ("mean_latency_ms", "mean_ttft_ms"):
                item[key] = float(r[key]) if r[key] is not None else None
            out.append(item)
        return out

    def usage_baseline(
        self,
        *,
        tenant: str | None = None,
        key_prefix: str | None = None,
        day_start: datetime,
        month_start: datetime,
    ) -> tuple[int, float]:
        """What a tenant or a key has used: the quota ledger's starting point after a restart.

        Args:
            tenant: the tenant's name (give this, ``key_prefix``, or both to intersect).
            key_prefix: the key's prefix.
            day_start: start of the current quota day (UTC midnight).
            month_start: start of the current quota month (the 1st, UTC midnight).

        Returns:
            ``(tokens, cost)``: prompt + completion tokens since ``day_start`` and money
            since ``month_start``.

        Raises:
            ValueError: neither ``tenant`` nor ``key_prefix`` given.
        """
        if tenant is None and key_prefix is None:
            raise ValueError("usage_baseline needs a tenant or a key_prefix")
        day_start, month_start = _as_utc(day_start), _as_utc(month_start)
        u = UsageRecord
        tokens = func.sum(
            case((u.created_at >= day_start, u.prompt_tokens + u.completion_tokens), else_=0)
        )
        cost = func.sum(case((u.created_at >= month_start, u.cost), else_=0.0))
        query = select(tokens, cost).where(u.created_at >= min(day_start, month_start))
        if tenant is not None:
            query = query.where(u.tenant == tenant)
        if key_prefix is not None:
            query = query.where(u.key_prefix == key_prefix)
        with self.engine.connect() as conn:
            row = conn.execute(query).one()
        return int(row[0] or 0), float(row[1] or 0.0)

    def _group_column(self, by: SummaryBy) -> ColumnElement[Any]:
        u = UsageRecord
        if by == "day":
            if self.engine.dialect.name == "postgresql":
                utc = func.timezone("UTC", u.created_at)
                return func.to_char(utc, "YYYY-MM-DD")
            # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text (see UTCDateTime).
            return func.substr(u.created_at, 1, 10)
        column = {"key": u.key_prefix, "model": u.model, "tenant": u.tenant}[by]
        return column.expression


def _where(
    query: Select[Any],
    *,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    model: str | None,
) -> Select[Any]:
    u = UsageRecord
    if tenant is not None:
        query = query.where(u.tenant == tenant)
    if since is not None:
        query = query.where(u.created_at >= as_utc(since, param="since"))
    if until is not None:
        query = query.where(u.created_at < as_utc(until, param="until"))
    if model is not None:
        query = query.where(u.model == model)
    return query


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _usage_row(record: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    missing = [f for f in _REQUIRED if record.get(f) is None]
    unknown = sorted(set(record) - _COLUMNS)
    if missing or unknown:
        raise ValueError(f"usage record: missing {missing}, unknown {unknown}")
    row = {**_DEFAULTS, **record}
    created = row.get("created_at")
    if created is None:
        row["created_at"] = now
    elif isinstance(created, str):
        row["created_at"] = datetime.fromisoformat(created)
    if row["status"] not in USAGE_STATUSES:
        raise ValueError(f"usage record: unknown status {row['status']!r}")
    if row["energy_source"] not in ENERGY_SOURCES:
        raise ValueError(f"usage record: unknown energy_source {row['energy_source']!r}")
    if row["error"] is not None:
        row["error"] = str(row["error"])[:ERROR_MAX_CHARS]
    return row


def _insert_sqlite(conn: Connection, rows: dict[str, dict[str, Any]]) -> int:
    # One prepared statement run by the driver's executemany, the rows bound by the columns'
    # own processors: SQLAlchemy's multi-row VALUES with RETURNING handled each row in Python
    # at twice the CPU (about 25 µs a record), all of it holding the GIL the gateway's event
    # loop needs. The driver sums the rows each execution changed: a conflict changes none.
    sql, names, binds = _sqlite_insert(conn.dialect)
    params = []
    for row in rows.values():
        values = [row[name] for name in names]
        for at, bind in binds:
            values[at] = bind(values[at])
        params.append(tuple(values))
    return int(conn.exec_driver_sql(sql, params).rowcount)


@functools.lru_cache(maxsize=8)
def _sqlite_insert(dialect: Dialect) -> tuple[str, list[str], list[tuple[int, Any]]]:
    """The insert of a usage row, its columns, and the binders of those that have one."""
    columns = [c for c in UsageRecord.__table__.columns if c.name != "id"]
    names = [c.name for c in columns]
    binds = [
        (at, c.type.dialect_impl(dialect).bind_processor(dialect)) for at, c in enumerate(columns)
    ]
    sql = (
        f"INSERT INTO {UsageRecord.__tablename__} ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)}) ON CONFLICT (request_id) DO NOTHING"
    )
    return sql, names, [(at, bind) for at, bind in binds if bind is not None]


def _insert_postgresql(conn: Connection, rows: dict[str, dict[str, Any]]) -> int:
    # RETURNING would make SQLAlchemy send one huge multi-row statement, which psycopg parses
    # in Python (~0.5 s per 2,000 rows); a plain executemany is pipelined and 5x faster. The
    # count is what was absent just before; a concurrent writer of the *same* request ids
    # (there is none: ids are per request) could make it overstate, never double-insert.
    from sqlalchemy import String, any_, bindparam
    from sqlalchemy.dialects.postgresql import ARRAY, insert

    ids = bindparam("ids", list(rows), type_=ARRAY(String()))
    present = conn.scalars(
        select(UsageRecord.request_id).where(UsageRecord.request_id == any_(ids))
    )
    for request_id in present:
        rows.pop(request_id, None)
    if rows:
        stmt = insert(UsageRecord).on_conflict_do_nothing(index_elements=["request_id"])
        conn.execute(stmt, list(rows.values()))
    return len(rows)
