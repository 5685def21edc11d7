"""ORM tables of sharing (revision ``0002``): tenants, API keys and usage records.

``tenants``
    Who pays: a name and the tenant-wide limits (requests and tokens per minute, tokens per
    UTC day, money per calendar month in ``currency``, concurrent requests, a model
    allow-list). ``None`` means unlimited; ``models=None`` allows every model. A deleted
    tenant keeps its row, with ``deleted_at`` set (revision ``0003``), and its keys revoked.
    Its ``weight`` (1 to :data:`zhisuan.limits.MAX_WEIGHT`, revision ``0004``) is its share
    of a replica's queue: up to that many of its requests start in each round of turns
    (``zhisuan.engines._turns``).

``api_keys``
    A secret ``zs-…`` of which only the first :data:`KEY_PREFIX_LEN` characters (the
    ``prefix``, shown in lists and usage) and the sha256 of the whole are stored. A key
    belongs to one tenant, or to none when ``is_admin``; it may narrow its tenant's limits and
    allow-list further. Keys are revoked (``revoked_at``), never deleted, so usage records
    keep pointing at something.

``usage_records``
    Exactly one row per request the gateway answered (``ok``, ``error``, ``client_abort``,
    ``worker_error`` or ``rejected``), unique on ``request_id`` so a replayed batch is
    harmless. ``tenant`` is the tenant's *name* (``"anonymous"`` when auth is off) rather
    than a foreign key: records are an append-only ledger and must be written fast.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from zhisuan.limits import MONEY_PLACES
from zhisuan.store.models import Base, UTCDateTime, utcnow

KEY_PREFIX_LEN = 12
"""Characters of a key kept in clear: ``zs-`` and 9 random ones (54 bits)."""
ANONYMOUS = "anonymous"
"""The tenant recorded for requests served with auth off; reserved as a tenant name."""
ADMIN_TENANT = "admin"
"""The tenant recorded for requests made with an admin key; reserved as a tenant name."""
USAGE_STATUSES = ("ok", "error", "client_abort", "worker_error", "rejected")
ENERGY_SOURCES = ("measured", "estimated")
LIMIT_FIELDS = ("rpm", "tpm", "tokens_per_day", "budget", "max_concurrent")
ERROR_MAX_CHARS = 500
# Money: exact in the database (MONEY_PLACES decimal places), float in Python (the quota
# ledger works in floats).
_Money = Numeric(18, MONEY_PLACES, asdecimal=False)


def hash_secret(secret: str) -> str:
    """The sha256 hex digest of an API key, as stored in ``api_keys.hash``."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """One scope's limits (a tenant's or a key's); ``None`` means unlimited.

    Attributes:
        rpm: requests per minute.
        tpm: tokens (prompt + completion) per minute.
        tokens_per_day: tokens per UTC day.
        budget: money per calendar month (UTC), in the tenant's currency.
        max_concurrent: requests in flight at once.
    """

    rpm: int | None = None
    tpm: int | None = None
    tokens_per_day: int | None = None
    budget: float | None = None
    max_concurrent: int | None = None


class Tenant(Base):
    """A tenant, its limits (``None`` = unlimited, ``models=None`` = every model) and its
    weight in the replicas' queues."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    budget: Mapped[float | None] = mapped_column(_Money)
    currency: Mapped[str] = mapped_column(String(8), default="USD")
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    models: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # revision 0003
    # requests started per turn in a replica's queue (revision 0004)
    weight: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))

    @property
    def limits(self) -> QuotaLimits:
        """The tenant-wide limits."""
        return QuotaLimits(*(getattr(self, f) for f in LIMIT_FIELDS))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every column (``created_at`` as ISO 8601)."""
        out = {c.key: getattr(self, c.key) for c in self.__table__.columns}
        out["created_at"] = _iso(self.created_at)
        out["deleted_at"] = _iso(self.deleted_at)
        return out

    def __repr__(self) -> str:
        return f"Tenant(name={self.name!r})"


class ApiKey(Base):
    """An API key: its clear prefix, the sha256 of the whole secret, and its own limits.

    ``tenant`` is loaded with the row (a join), so it can be read after the session closes.
    Revocation and expiry are *recorded* here; :meth:`status` says which applies.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(KEY_PREFIX_LEN), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    models: Mapped[list[str] | None] = mapped_column(JSON)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    budget: Mapped[float | None] = mapped_column(_Money)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tenant: Mapped[Tenant | None] = relationship(lazy="joined")

    @property
    def limits(self) -> QuotaLimits:
        """The key's own limits (on top of its tenant's)."""
        return QuotaLimits(*(getattr(self, f) for f in LIMIT_FIELDS))

    @property
    def tenant_name(self) -> str | None:
        """The owning tenant's name; None for an admin key."""
        return self.tenant.name if self.tenant is not None else None

    def status(self, now: datetime | None = None) -> str:
        """``"revoked"``, ``"expired"`` (at ``now``, default the current time) or ``"active"``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def matches(self, secret: str) -> bool:
        """Whether ``secret`` is this key (sha256 compared in constant time)."""
        return hmac.compare_digest(hash_secret(secret), self.hash)

    def allows(self, model: str) -> bool:
        """Whether both the key's and its tenant's allow-lists (None = all) admit ``model``."""
        lists = (self.models, self.tenant.models if self.tenant is not None else None)
        return all(allowed is None or model in allowed for allowed in lists)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every column but ``hash``, plus ``tenant`` and ``status``."""
        out = {c.key: getattr(self, c.key) for c in self.__table__.columns if c.key != "hash"}
        for key in ("expires_at", "revoked_at", "created_at", "last_used_at"):
            out[key] = _iso(out[key])
        out["tenant"] = self.tenant_name
        out["status"] = self.status()
        return out

    def __repr__(self) -> str:  # never the hash
        return f"ApiKey(prefix={self.prefix!r}, tenant={self.tenant_name!r})"


class UsageRecord(Base):
    """One request's metering: who, what, how long, how many tokens, what it cost.

    Times are milliseconds; ``device_s`` is this request's share of its replica's busy time;
    ``energy_wh`` is labelled ``measured`` (NVML) or ``estimated`` (busy time × power).
    """

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    key_prefix: Mapped[str | None] = mapped_column(String(KEY_PREFIX_LEN), index=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    replica: Mapped[str | None] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(64))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[float | None] = mapped_column(Double)
    tpot_ms: Mapped[float | None] = mapped_column(Double)
    latency_ms: Mapped[float] = mapped_column(Double, default=0.0)
    cost: Mapped[float] = mapped_column(Double, default=0.0)
    currency: Mapped[str] = mapped_column(String(8), default="USD")
    device_s: Mapped[float] = mapped_column(Double, default=0.0)
    energy_wh: Mapped[float] = mapped_column(Double, default=0.0)
    energy_source: Mapped[str] = mapped_column(String(16), default="estimated")
    error: Mapped[str | None] = mapped_column(Text)

    STABLE_FIELDS = (
        "request_id",
        "created_at",
        "tenant",
        "key_prefix",
        "model",
        "replica",
        "endpoint",
        "stream",
        "status",
        "http_status",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "tpot_ms",
        "latency_ms",
        "cost",
        "currency",
        "device_s",
        "energy_wh",
        "energy_source",
        "error",
    )
    """The fields of :meth:`to_dict`, in order (``zhisuan usage --json`` and ``--csv``)."""

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form of one record (``created_at`` as ISO 8601)."""
        out = {f: getattr(self, f) for f in self.STABLE_FIELDS}
        out["created_at"] = _iso(self.created_at)
        return out

    def __repr__(self) -> str:
        return (
            f"UsageRecord(request_id={self.request_id!r}, tenant={self.tenant!r}, "
            f"model={self.model!r}, status={self.status!r})"
        )
