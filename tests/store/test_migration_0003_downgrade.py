"""Downgrading 0003 to 0002 keeps deleted tenants deleted: 0002 has no ``deleted_at``, so a
tenant row there is a live tenant; the downgrade removes the deleted tenants and their
(revoked) keys, and every usage record stays. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text, update
from tests.store._records import usage_record

from zhisuan.store import ApiKey, Store, alembic_config, make_engine, upgrade


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _downgrade(engine: Engine, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql))]


def test_deleted_tenants_and_their_keys_do_not_come_back(engine: Engine) -> None:
    store = Store(engine)
    store.create_tenant("acme", budget=5.0)
    acme_keys = [store.create_key(tenant="acme")[0].prefix for _ in range(2)]
    store.revoke_key(acme_keys[1])  # revoked before the tenant was deleted
    store.create_tenant("beta")
    beta_key = store.create_key(tenant="beta")[0].prefix
    store.create_tenant("gamma")  # deleted, then created again: live, its old key revoked
    gamma_old = store.create_key(tenant="gamma")[0].prefix
    admin_key = store.create_key(tenant=None, admin=True)[0].prefix
    store.add_usage(
        [
            usage_record("r1", tenant="acme", key_prefix=acme_keys[0]),
            usage_record("r2", tenant="acme", key_prefix=acme_keys[1]),
            usage_record("r3", tenant="beta", key_prefix=beta_key),
            usage_record("r4", tenant="gamma", key_prefix=gamma_old),
        ]
    )
    store.delete_tenant("acme")
    store.delete_tenant("gamma")
    store.create_tenant("gamma")
    with store.session() as s, s.begin():  # a key its tenant's deletion missed: gone as well
        s.execute(update(ApiKey).where(ApiKey.prefix == acme_keys[0]).values(revoked_at=None))

    _downgrade(engine, "0002")

    assert _rows(engine, "SELECT name FROM tenants ORDER BY name") == [("beta",), ("gamma",)]
    keys = _rows(engine, "SELECT prefix, revoked_at IS NULL FROM api_keys ORDER BY id")
    assert keys == [(beta_key, True), (gamma_old, False), (admin_key, True)]
    records = "SELECT request_id, tenant, key_prefix FROM usage_records ORDER BY request_id"
    assert _rows(engine, records) == [
        ("r1", "acme", acme_keys[0]),
        ("r2", "acme", acme_keys[1]),
        ("r3", "beta", beta_key),
        ("r4", "gamma", gamma_old),
    ]

    assert upgrade(engine) is True  # and back up: acme's name is free, its usage still counts
    store = Store(engine)
    assert [t.name for t in store.list_tenants()] == ["beta", "gamma"]
    store.create_tenant("acme")
    by_tenant = {row["tenant"]: row["requests"] for row in store.usage_summary(by="tenant")}
    assert by_tenant == {"acme": 2, "beta": 1, "gamma": 1}


def test_a_store_without_deleted_tenants_downgrades_unchanged(engine: Engine) -> None:
    store = Store(engine)
    store.create_tenant("acme")
    prefix = store.create_key(tenant="acme")[0].prefix
    _downgrade(engine, "0002")
    assert _rows(engine, "SELECT name FROM tenants") == [("acme",)]
    assert _rows(engine, "SELECT prefix, revoked_at IS NULL FROM api_keys") == [(prefix, True)]
