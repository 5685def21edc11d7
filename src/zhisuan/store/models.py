"""ORM tables of the store (SQLAlchemy 2 typed declarative).

Tables of the initial revision (``0001``):

``models``
    One row per imported model artifact (an HF-format directory or a GGUF file), with the
    facts read from it at import: architecture, parameter count from the tensor shapes,
    shape of the network, dtype, bytes on disk and the sha256 of every weight file.

``deployments``
    What ``zhisuan serve`` should run: one row per *served model name*, naming the engine,
    the device and the number of replicas. ``model_name`` is deliberately **not** a foreign
    key: an ``upstream`` deployment (a vLLM server, a cloud API) serves a name that has no
    local artifact. The rule "a local engine needs an imported model" and the rule "a deployed
    model cannot be removed" are enforced in :class:`zhisuan.store.Store` inside the same
    transaction as the write, on SQLite and PostgreSQL alike.

Later migrations (tenants, API keys, usage records) add their tables to :data:`Base.metadata`
in their own modules and a new revision under ``migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from zhisuan.limits import MAX_REPLICAS as MAX_REPLICAS  # the tables' docs name it

# Deterministic constraint names, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MODEL_FORMATS = ("hf", "gguf")
MODEL_TASKS = ("chat", "embedding")
LICENCES = ("research", "commercial")
ENGINES = ("transformers", "llamacpp", "upstream")
FORMAT_ENGINES = {"hf": "transformers", "gguf": "llamacpp"}
"""The local engine that runs each model format."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; SQLite's naive values come back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every zhisuan table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Model(Base):
    """An imported model artifact.

    Attributes:
        name: the served name (``[a-z0-9][a-z0-9._:-]*``, at most 64 characters).
        format: ``"hf"`` (a directory) or ``"gguf"`` (a single file).
        task: ``"chat"`` or ``"embedding"``.
        path: where the artifact lives now (a copy under ``models_dir``, or the original
            when ``linked``).
        source_path: where it was imported from.
        linked: True when imported without copying; ``rm`` then leaves the files alone.
        param_count: sum of the element counts of every weight tensor (from the shapes).
        dtype: the dtype holding most parameters (``bfloat16``, ``float16``, ``Q4_K_M`` …).
        bytes_on_disk: total size of the imported files in bytes.
        files: ``[{"name": relative path, "bytes": int, "sha256": hex}]`` for each weight file.
    """

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    format: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(16), default="chat")
    path: Mapped[str] = mapped_column(Text)
    source_path: Mapped[str] = mapped_column(Text)
    linked: Mapped[bool] = mapped_column(Boolean, default=False)
    architecture: Mapped[str | None] = mapped_column(String(128))
    param_count: Mapped[int | None] = mapped_column(BigInteger)
    num_layers: Mapped[int | None] = mapped_column(Integer)
    hidden_size: Mapped[int | None] = mapped_column(Integer)
    num_heads: Mapped[int | None] = mapped_column(Integer)
    num_kv_heads: Mapped[int | None] = mapped_column(Integer)
    context_length: Mapped[int | None] = mapped_column(Integer)
    dtype: Mapped[str | None] = mapped_column(String(32))
    bytes_on_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    licence: Mapped[str] = mapped_column(String(16), default="research")
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every column (``created_at`` as ISO 8601)."""
        out = {c.key: getattr(self, c.key) for c in self.__table__.columns}
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, format={self.format!r}, path={self.path!r})"


class Deployment(Base):
    """What to serve under one model name: engine, device and replica count.

    Attributes:
        model_name: the served name; for ``transformers``/``llamacpp`` the name of an imported
            :class:`Model`, for ``upstream`` any name (no local model needed).
        engine: ``"transformers"``, ``"llamacpp"`` or ``"upstream"``.
        device: ``"cpu"``, ``"cuda:0"`` …
        replicas: how many worker processes to run (1 to :data:`MAX_REPLICAS`).
        options: engine options, e.g. ``{"base_url": …, "api_key_env": …, "max_batch": 8}``.
    """

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64), unique=True)
    engine: Mapped[str] = mapped_column(String(32))
    device: Mapped[str] = mapped_column(String(32), default="cpu")
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every column (``created_at`` as ISO 8601)."""
        out = {c.key: getattr(self, c.key) for c in self.__table__.columns}
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out

    def __repr__(self) -> str:
        return (
            f"Deployment(model_name={self.model_name!r}, engine={self.engine!r}, "
            f"device={self.device!r}, replicas={self.replicas})"
        )
