"""Tenants, API keys and usage records, on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import math
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from tests.store._records import usage_record as _rec

from zhisuan.errors import InvalidParameter, NotFound, UserError
from zhisuan.store import (
    KEY_PREFIX_LEN,
    ApiKey,
    Model,
    QuotaLimits,
    Store,
    Tenant,
    _share_store,
    alembic_config,
    hash_secret,
    make_engine,
    upgrade,
)

# -- tenants ------------------------------------------------------------------------------


def test_tenant_create_get_update_list(store: Store) -> None:
    t = store.create_tenant("acme", rpm=60, tpm=10_000, tokens_per_day=5_000_000_000, budget=12.5)
    assert t.id is not None and t.currency == "USD" and t.models is None
    store.create_tenant("beta", models=["qwen", "qwen", " llama "], currency="cny")
    got = store.get_tenant("acme")
    assert got.limits == QuotaLimits(60, 10_000, 5_000_000_000, 12.5, None)
    assert got.created_at.tzinfo is not None
    beta = store.get_tenant("beta")
    assert beta.models == ["qwen", "llama"] and beta.currency == "CNY"
    updated = store.update_tenant("acme", rpm=None, max_concurrent=4, models=["qwen"])
    assert updated.rpm is None and updated.max_concurrent == 4 and updated.tpm == 10_000
    assert store.get_tenant("acme").models == ["qwen"]
    assert [t.name for t in store.list_tenants()] == ["acme", "beta"]
    d = store.get_tenant("acme").to_dict()
    assert d["name"] == "acme" and isinstance(d["created_at"], str) and d["budget"] == 12.5


def test_tenant_errors(store: Store) -> None:
    store.create_tenant("acme")
    with pytest.raises(UserError, match="already exists"):
        store.create_tenant("acme")
    for bad in ("Acme", "-x", "a" * 65, "a b", "anonymous", "admin"):
        with pytest.raises(InvalidParameter) as info:
            store.create_tenant(bad)
        assert info.value.param == "name"
    for field, value in (
        ("rpm", 0),
        ("tpm", -5),
        ("budget", 0.0),
        ("max_concurrent", 1.5),
        ("rpm", 2**31),
        ("budget", 1e15),
    ):
        with pytest.raises(InvalidParameter, match=field) as info:
            store.create_tenant("other", **{field: value})
        assert info.value.param == field
    with pytest.raises(InvalidParameter, match="allow-list"):
        store.create_tenant("other", models=[])
    with pytest.raises(InvalidParameter, match="currency"):
        store.create_tenant("other", currency="dollars")
    with pytest.raises(InvalidParameter, match="unknown tenant field"):
        store.update_tenant("acme", colour="red")
    with pytest.raises(NotFound) as nf:
        store.get_tenant("acmee")
    assert nf.value.suggestions == ["acme"]
    with pytest.raises(NotFound):
        store.update_tenant("nope", rpm=1)


def test_a_deleted_tenant_keeps_its_history_and_its_name_can_come_back(store: Store) -> None:
    first = store.create_tenant("acme", rpm=60, budget=5.0)
    active, _ = store.create_key(tenant="acme")
    revoked, _ = store.create_key(tenant="acme")
    store.revoke_key(revoked.prefix)
    store.create_tenant("beta")
    store.add_usage([_rec("r1", tenant="acme")])
    gone, count = store.delete_tenant("acme")
    assert count == 1 and gone.deleted_at is not None  # the revoked one was revoked already
    assert gone.to_dict()["deleted_at"] == gone.deleted_at.isoformat()
    assert [t.name for t in store.list_tenants()] == ["beta"]
    assert {k.prefix: k.status() for k in store.list_keys("acme")} == {
        active.prefix: "revoked",
        revoked.prefix: "revoked",
    }
    for act in (
        lambda: store.get_tenant("acme"),
        lambda: store.update_tenant("acme", rpm=1),
        lambda: store.create_key(tenant="acme"),
        lambda: store.delete_tenant("acme"),
    ):
        with pytest.raises(NotFound, match="'acme' was deleted on ") as info:
            act()
        assert info.value.hint is not None and "tenants create acme" in info.value.hint
    assert store.get_tenant("acme", deleted=True).deleted_at is not None
    with pytest.raises(NotFound) as near:
        store.get_tenant("acmee")
    assert near.value.suggestions == []  # a deleted name is not offered
    assert [r.request_id for r in store.query_usage(tenant="acme")] == ["r1"]
    back = store.create_tenant("acme", tpm=100)  # the name comes back, with today's limits
    assert (back.id, back.deleted_at, back.rpm, back.tpm, back.budget) == (
        first.id, None, None, 100, None,
    )  # fmt: skip
    assert store.get_tenant("acme").tpm == 100
    assert [k.status() for k in store.list_keys("acme")] == ["revoked", "revoked"]
    with pytest.raises(UserError, match="already exists"):
        store.create_tenant("acme")


# -- keys ---------------------------------------------------------------------------------


def test_key_is_stored_only_as_prefix_and_hash(store: Store) -> None:
    store.create_tenant("acme")
    row, secret = store.create_key(tenant="acme", name="ci")
    assert secret.startswith("zs-") and len(secret) >= 40
    assert row.prefix == secret[:KEY_PREFIX_LEN] and row.hash == hash_secret(secret)
    with store.engine.connect() as conn:
        for table in ("api_keys", "tenants"):
            for db_row in conn.execute(text(f"SELECT * FROM {table}")):
                assert all(secret not in str(v) for v in db_row)
    d = row.to_dict()
    assert "hash" not in d and secret not in str(d) and secret not in repr(row)
    assert d["tenant"] == "acme" and d["status"] == "active" and d["prefix"] == row.prefix


def test_authenticate(store: Store) -> None:
    store.create_tenant("acme", rpm=5, models=["qwen", "llama"])
    _, secret = store.create_key(tenant="acme", models=["qwen", "llama"], tpm=100)
    store.update_tenant("acme", models=["qwen"])  # narrowed after the key was made
    key = store.authenticate(secret)
    assert key is not None and key.status() == "active"
    assert key.tenant is not None and key.tenant.name == "acme"  # readable, detached
    assert key.tenant.limits.rpm == 5 and key.limits.tpm == 100
    assert key.allows("qwen") and not key.allows("llama")  # tenant narrows it
    assert key.matches(secret) and not key.matches(secret + "x")
    # Same prefix, wrong rest: the digest comparison refuses it.
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate("zs-unknownunknownunknown") is None
    assert store.authenticate("short") is None
    assert store.authenticate("") is None


def test_revoked_and_expired_keys_are_reported(store: Store) -> None:
    store.create_tenant("acme")
    row, secret = store.create_key(tenant="acme")
    revoked = store.revoke_key(row.prefix)
    assert revoked.revoked_at is not None
    again = store.revoke_key(secret)  # a whole key works too; idempotent
    assert again.revoked_at == revoked.revoked_at
    key = store.authenticate(secret)
    assert key is not None and key.status() == "revoked"

    soon = datetime.now(UTC) + timedelta(seconds=1)
    _, s2 = store.create_key(tenant="acme", expires_at=soon)
    key2 = store.authenticate(s2)
    assert key2 is not None and key2.status() == "active"
    assert key2.status(soon + timedelta(seconds=1)) == "expired"
    assert key2.expires_at is not None and key2.expires_at.tzinfo is not None

    with pytest.raises(InvalidParameter, match="not in the future") as info:
        store.create_key(tenant="acme", expires_at=datetime(2020, 1, 1))
    assert info.value.param == "expires_at"
    with pytest.raises(NotFound) as nf:
        store.revoke_key("zs-nothere00")
    assert nf.value.param == "prefix"


def test_a_naive_expiry_is_utc(store: Store) -> None:
    store.create_tenant("acme")
    row, _ = store.create_key(tenant="acme", expires_at=datetime(2999, 1, 1))
    assert row.expires_at == datetime(2999, 1, 1, tzinfo=UTC)
    assert row.to_dict()["status"] == "active"  # compared with an aware "now"
    changed = store.update_key(row.prefix, expires_at=datetime(2998, 6, 1, 12))
    assert changed.status() == "active"
    assert changed.to_dict()["expires_at"] == "2998-06-01T12:00:00+00:00"
    assert store.list_keys("acme")[0].expires_at == datetime(2998, 6, 1, 12, tzinfo=UTC)


# In UTC, these fall before year 1 and after year 9999: no datetime can hold them.
TOO_EARLY = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
TOO_LATE = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))


def test_a_time_outside_years_1_to_9999_in_utc_is_refused(store: Store) -> None:
    store.create_tenant("acme")
    row, _ = store.create_key(tenant="acme")
    for act in (
        lambda: store.create_key(tenant="acme", expires_at=TOO_LATE),
        lambda: store.update_key(row.prefix, expires_at=TOO_LATE),
    ):
        with pytest.raises(InvalidParameter, match="out of range") as info:
            act()
        assert info.value.param == "expires_at"
    assert [(k.prefix, k.expires_at) for k in store.list_keys("acme")] == [(row.prefix, None)]
    store.add_usage([_rec("r1", tenant="acme")])
    for field, when in (("since", TOO_EARLY), ("until", TOO_LATE), ("since", TOO_LATE)):
        for read in (store.query_usage, functools.partial(store.usage_summary, by="day")):
            with pytest.raises(InvalidParameter, match=f"{field} .* is out of range") as info:
                read(**{field: when})
            assert info.value.param == field


def test_a_key_made_while_its_tenant_is_deleted_is_not_left_active(
    db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``delete_tenant`` (another process's) between ``create_key``'s read of the tenant
    and its insert: the key is refused, or revoked by the delete, never left active."""
    store.create_tenant("acme")
    other = Store.open(db_url)
    deleting = threading.Thread(target=other.delete_tenant, args=("acme",))
    check = _share_store.check_within_tenant

    def interleaved(key: ApiKey, tenant: Tenant | None) -> None:
        deleting.start()
        deleting.join(timeout=1)  # done at once on SQLite; PostgreSQL waits for our row lock
        check(key, tenant)

    monkeypatch.setattr(_share_store, "check_within_tenant", interleaved)
    try:
        try:
            store.create_key(tenant="acme")
        except NotFound as refused:  # the delete committed first
            assert "'acme' was deleted on" in refused.message
        deleting.join(timeout=30)
    finally:
        other.close()
    assert not deleting.is_alive()
    assert store.get_tenant("acme", deleted=True).deleted_at is not None
    assert [k.status() for k in store.list_keys("acme")] in ([], ["revoked"])
    if db_url.startswith("sqlite"):  # no row lock: the delete went first, the key is refused
        assert store.list_keys("acme") == []


def test_a_limit_must_be_a_finite_number(store: Store) -> None:
    store.create_tenant("acme", budget=5.0)
    row, _ = store.create_key(tenant="acme", budget=2.0)
    for value in (math.nan, math.inf, -math.inf):
        for act in (
            lambda v=value: store.create_tenant("beta", budget=v),
            lambda v=value: store.update_tenant("acme", budget=v),
            lambda v=value: store.update_tenant("acme", rpm=v),
            lambda v=value: store.create_key(tenant="acme", budget=v),
            lambda v=value: store.update_key(row.prefix, budget=v),
        ):
            with pytest.raises(InvalidParameter, match="must be a finite number") as info:
                act()
            assert info.value.param in ("budget", "rpm")
    assert [(t.name, t.budget, t.rpm) for t in store.list_tenants()] == [("acme", 5.0, None)]
    assert [k.budget for k in store.list_keys("acme")] == [2.0]


def test_admin_key_and_key_rules(store: Store) -> None:
    store.create_tenant("acme")
    row, secret = store.create_key(tenant=None, admin=True, name="ops")
    assert row.is_admin and row.tenant_id is None
    key = store.authenticate(secret)
    assert key is not None and key.is_admin and key.tenant is None and key.allows("any")
    assert key.to_dict()["tenant"] is None
    with pytest.raises(InvalidParameter, match="not both or neither"):
        store.create_key(tenant="acme", admin=True)
    with pytest.raises(InvalidParameter, match="not both or neither"):
        store.create_key(tenant=None)
    with pytest.raises(InvalidParameter, match="admin key has no limits"):
        store.create_key(tenant=None, admin=True, rpm=5)
    with pytest.raises(InvalidParameter, match="rpm"):
        store.create_key(tenant="acme", rpm=0)
    with pytest.raises(InvalidParameter, match="key name"):
        store.create_key(tenant="acme", name="x" * 129)
    with pytest.raises(NotFound, match="tenant 'acm' not found"):
        store.create_key(tenant="acm")


def test_a_keys_allow_list_stays_within_its_tenants(store: Store) -> None:
    store.create_tenant("acme", models=["qwen", "llama"])
    store.create_tenant("open")  # every model
    with pytest.raises(InvalidParameter, match="tenant 'acme' may not use 'glm'") as refused:
        store.create_key(tenant="acme", models=["qwen", "glm"])
    assert refused.value.param == "models" and "qwen, llama" in (refused.value.hint or "")
    assert store.list_keys("acme") == []  # nothing written
    row, _ = store.create_key(tenant="acme", models=["llama"])
    with pytest.raises(InvalidParameter, match="may not use 'glm'"):
        store.update_key(row.prefix, models=["glm"])
    assert store.list_keys("acme")[0].models == ["llama"]  # as it was
    assert store.update_key(row.prefix, models=None).models is None  # the tenant's list
    assert store.create_key(tenant="open", models=["any-name"])[0].models == ["any-name"]


def test_list_keys(store: Store) -> None:
    store.create_tenant("acme")
    store.create_tenant("beta")
    a, _ = store.create_key(tenant="acme")
    b, _ = store.create_key(tenant="beta")
    adm, _ = store.create_key(tenant=None, admin=True)
    assert [k.prefix for k in store.list_keys()] == [a.prefix, b.prefix, adm.prefix]
    assert [k.prefix for k in store.list_keys("beta")] == [b.prefix]
    assert store.list_keys("beta")[0].tenant_name == "beta"
    with pytest.raises(NotFound):
        store.list_keys("gamma")
    store.touch_keys([a.prefix])
    assert store.list_keys("acme")[0].last_used_at is not None


def test_migration_0001_to_0002_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        with Store(engine).session() as s, s.begin():
            s.add(Model(name="m", format="hf", path="/m", source_path="/m", files=[]))
        assert upgrade(engine) is True
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        assert {"tenants", "api_keys", "usage_records"} <= tables
        store = Store(engine)
        store.create_tenant("acme")
        store.create_key(tenant="acme")
        store.add_usage([_rec("r1")])
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        assert not {"tenants", "api_keys", "usage_records"} & tables
        with Store(engine).session() as s:
            assert s.scalars(select(Model.name)).all() == ["m"]
        assert upgrade(engine) is True
        assert Store(engine).list_tenants() == []
    finally:
        engine.dispose()


def test_migration_0002_to_0003_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
            row = "INSERT INTO tenants (name, currency, created_at) VALUES ('acme', 'USD', :t)"
            conn.execute(text(row), {"t": datetime(2026, 1, 1, tzinfo=UTC)})
        assert upgrade(engine) is True
        store = Store(engine)
        assert store.get_tenant("acme").deleted_at is None
        store.delete_tenant("acme")
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
        with engine.connect() as conn:
            assert "deleted_at" not in {c["name"] for c in inspect(conn).get_columns("tenants")}
            # 0002 has no deleted tenants: acme goes (tests/store/test_migration_0003_downgrade.py)
            assert conn.execute(text("SELECT name FROM tenants")).scalars().all() == []
    finally:
        engine.dispose()


def test_api_key_repr_has_no_secret(store: Store) -> None:
    store.create_tenant("acme")
    row, secret = store.create_key(tenant="acme")
    assert isinstance(row, ApiKey)
    assert row.hash not in repr(row) and secret not in repr(row)
