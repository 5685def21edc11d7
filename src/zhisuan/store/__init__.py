"""Durable state: models and deployments; tenants, API keys and usage records.

SQLAlchemy 2 with Alembic migrations shipped in the package; SQLite (WAL) by default,
PostgreSQL (psycopg 3) by URL. Opening a store migrates it to the newest revision, so a fresh
home needs no manual step::

    from zhisuan.settings import Settings
    from zhisuan.store import open_store

    with open_store(Settings()) as store:
        for m in store.list_models():
            print(m.name, m.param_count)
"""

from __future__ import annotations

from zhisuan.limits import BUDGET_STEP, MAX_REPLICAS, MAX_WEIGHT, MONEY_PLACES
from zhisuan.store._db import alembic_config, current_revision, make_engine, upgrade
from zhisuan.store._deploy_checks import check_replicas
from zhisuan.store._share_checks import tenant_currency
from zhisuan.store._share_models import (
    ADMIN_TENANT,
    ANONYMOUS,
    ENERGY_SOURCES,
    KEY_PREFIX_LEN,
    USAGE_STATUSES,
    ApiKey,
    QuotaLimits,
    Tenant,
    UsageRecord,
    hash_secret,
)
from zhisuan.store._store import Store, open_store
from zhisuan.store._usage_store import SUMMARY_BY, SummaryBy
from zhisuan.store.migrations import HEAD
from zhisuan.store.models import (
    ENGINES,
    LICENCES,
    MODEL_FORMATS,
    MODEL_TASKS,
    Base,
    Deployment,
    Model,
)

__all__ = [
    "ADMIN_TENANT",
    "ANONYMOUS",
    "BUDGET_STEP",
    "ENERGY_SOURCES",
    "ENGINES",
    "HEAD",
    "KEY_PREFIX_LEN",
    "LICENCES",
    "MAX_REPLICAS",
    "MAX_WEIGHT",
    "MODEL_FORMATS",
    "MODEL_TASKS",
    "MONEY_PLACES",
    "SUMMARY_BY",
    "USAGE_STATUSES",
    "ApiKey",
    "Base",
    "Deployment",
    "Model",
    "QuotaLimits",
    "Store",
    "SummaryBy",
    "Tenant",
    "UsageRecord",
    "alembic_config",
    "check_replicas",
    "current_revision",
    "hash_secret",
    "make_engine",
    "open_store",
    "tenant_currency",
    "upgrade",
]
