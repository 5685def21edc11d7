"""Tenants, API keys and usage records, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from zhisuan.errors import InvalidParameter, NotFound, UserError
from zhisuan.store import (
    KEY_PREFIX_LEN,
    ApiKey,
    Model,
    QuotaLimits,
    Store,
    alembic_config,
    hash_secret,
    make_engine,
    upgrade,
)

T0 = datetime(2025, 3, 31, 23, 0, tzinfo=UTC)  # an hour before a day and month boundary


def _rec(rid: str, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "request_id": rid,
        "created_at": T0,
        "tenant": "acme",
        "key_prefix": "zs-aaaaaaaaa",
        "model": "qwen",
        "endpoint": "/v1/chat/completions",
        "status": "ok",
        "http_status": 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "ttft_ms": 20.0,
        "tpot_ms": 4.0,
        "latency_ms": 40.0,
        "cost": 0.5,
        "energy_wh": 0.01,
        "energy_source": "estimated",
    }
    rec.update(kw)
    return rec


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


# -- usage --------------------------------------------------------------------------------


def test_add_usage_is_idempotent(store: Store) -> None:
    assert store.add_usage([]) == 0
    assert store.add_usage([_rec("r1"), _rec("r2"), _rec("r1")]) == 2
    assert store.add_usage([_rec("r2"), _rec("r3", error="x" * 2000)]) == 1
    rows = store.query_usage()
    assert [r.request_id for r in rows] == ["r1", "r2", "r3"]
    assert rows[2].error == "x" * 500
    d = rows[0].to_dict()
    for field in (
        "tenant", "model", "prompt_tokens", "completion_tokens", "status", "ttft_ms",
        "latency_ms", "cost", "energy_wh", "energy_source", "request_id", "created_at",
        "key_prefix", "replica", "endpoint", "tpot_ms", "currency", "http_status", "device_s",
    ):  # fmt: skip
        assert field in d
    assert d["created_at"] == T0.isoformat() and d["stream"] is False


def test_add_usage_rejects_malformed_records(store: Store) -> None:
    with pytest.raises(ValueError, match="missing"):
        store.add_usage([{"request_id": "x"}])
    with pytest.raises(ValueError, match="unknown"):
        store.add_usage([_rec("x", colour="red")])
    with pytest.raises(ValueError, match="status"):
        store.add_usage([_rec("x", status="fine")])
    assert store.query_usage() == []


def test_add_usage_batch_of_2000(store: Store) -> None:
    batch = [_rec(f"req-{i}", created_at=T0 + timedelta(seconds=i)) for i in range(2000)]
    start = time.perf_counter()
    assert store.add_usage(batch) == 2000
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"2,000 records took {elapsed:.2f}s"
    assert store.add_usage([*batch[:1500], _rec("req-new", created_at=None)]) == 1
    assert len(store.query_usage()) == 2001
    newest = store.query_usage(limit=3)
    assert [r.request_id for r in newest] == ["req-1998", "req-1999", "req-new"]


def test_query_usage_filters_and_tenant_isolation(store: Store) -> None:
    store.add_usage(
        [
            _rec("a1", tenant="acme"),
            _rec("a2", tenant="acme", model="llama", created_at=T0 + timedelta(hours=2)),
            _rec("b1", tenant="beta", key_prefix="zs-bbbbbbbbb"),
        ]
    )
    assert {r.tenant for r in store.query_usage(tenant="beta")} == {"beta"}
    assert [r.request_id for r in store.query_usage(tenant="acme")] == ["a1", "a2"]
    assert store.query_usage(tenant="acm") == []
    assert [r.request_id for r in store.query_usage(model="llama")] == ["a2"]
    assert [r.request_id for r in store.query_usage(since=T0 + timedelta(hours=1))] == ["a2"]
    assert [r.request_id for r in store.query_usage(until=T0 + timedelta(hours=1))] == [
        "a1",
        "b1",
    ]
    assert [r.request_id for r in store.query_usage(key_prefix="zs-bbbbbbbbb")] == ["b1"]


def test_usage_baseline_across_day_and_month_boundary(store: Store) -> None:
    day1, day2 = datetime(2025, 3, 31, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
    march = datetime(2025, 3, 1, tzinfo=UTC)
    store.add_usage(
        [
            _rec("old-month", created_at=datetime(2025, 3, 1, 12, tzinfo=UTC), cost=100.0),
            _rec("old-day", created_at=day1 - timedelta(seconds=1), cost=3.0),
            _rec("yesterday", created_at=day2 - timedelta(seconds=1), cost=1.0),
        ]
    )
    # Late on 31 March: the day and the month are March's.
    tokens, cost = store.usage_baseline(tenant="acme", day_start=day1, month_start=march)
    assert (tokens, cost) == (15, pytest.approx(104.0))
    store.add_usage(
        [
            _rec("midnight", created_at=day2, prompt_tokens=7, completion_tokens=3, cost=2.0),
            _rec("today", created_at=day2 + timedelta(hours=5), cost=0.25, key_prefix="zs-k2"),
            _rec("other", created_at=day2 + timedelta(hours=5), tenant="beta", cost=9.0),
        ]
    )
    # On 1 April: only the records from midnight on count, for both.
    tokens, cost = store.usage_baseline(tenant="acme", day_start=day2, month_start=day2)
    assert (tokens, cost) == (10 + 15, pytest.approx(2.25))
    # A day inside a longer month: tokens from the day, money from the month.
    tokens, cost = store.usage_baseline(tenant="acme", day_start=day2, month_start=march)
    assert (tokens, cost) == (25, pytest.approx(106.25))
    tokens, cost = store.usage_baseline(key_prefix="zs-k2", day_start=day2, month_start=day2)
    assert (tokens, cost) == (15, pytest.approx(0.25))
    naive = day2.replace(tzinfo=None)
    assert store.usage_baseline(tenant="nobody", day_start=naive, month_start=naive) == (0, 0.0)
    with pytest.raises(ValueError, match="tenant or a key_prefix"):
        store.usage_baseline(day_start=day2, month_start=day2)


def test_usage_summary_groupings(store: Store) -> None:
    day2 = datetime(2025, 4, 1, 0, 30, tzinfo=UTC)
    store.add_usage(
        [
            _rec("1", model="qwen", ttft_ms=10.0, latency_ms=100.0),
            _rec("2", model="qwen", created_at=day2, status="error", ttft_ms=None, latency_ms=50.0),
            _rec("3", model="llama", tenant="beta", key_prefix="zs-bbbbbbbbb", cost=1.0),
            _rec("4", model="llama", tenant="beta", key_prefix=None, currency="CNY"),
            *(
                _rec(
                    rid,
                    model=m,
                    tenant="gamma",
                    status="rejected",
                    prompt_tokens=0,
                    completion_tokens=0,
                    ttft_ms=None,
                    tpot_ms=None,
                    latency_ms=0.1,
                    cost=0.0,
                )
                for rid, m in (("5", "qwen"), ("6", "glm"))
            ),
        ]
    )
    by_model = {r["model"]: r for r in store.usage_summary(by="model") if r["currency"] == "USD"}
    assert by_model["qwen"]["requests"] == 3 and by_model["qwen"]["errors"] == 2
    assert by_model["qwen"]["total_tokens"] == 30
    assert by_model["qwen"]["mean_latency_ms"] == pytest.approx(75.0)  # the refusal left out
    assert by_model["glm"]["mean_latency_ms"] is None
    assert by_model["qwen"]["mean_ttft_ms"] == pytest.approx(10.0)
    assert by_model["llama"]["cost"] == pytest.approx(1.0)

    by_day = store.usage_summary(by="day", tenant="acme")
    assert [(r["day"], r["requests"]) for r in by_day] == [("2025-03-31", 1), ("2025-04-01", 1)]

    by_tenant = store.usage_summary(by="tenant")
    assert [(r["tenant"], r["currency"], r["requests"]) for r in by_tenant] == [
        ("acme", "USD", 2),
        ("beta", "CNY", 1),
        ("beta", "USD", 1),
        ("gamma", "USD", 2),
    ]
    by_key = store.usage_summary(by="key", tenant="beta")
    assert {(r["key"], r["tenant"]) for r in by_key} == {(None, "beta"), ("zs-bbbbbbbbb", "beta")}
    assert [r["model"] for r in store.usage_summary(by="model", since=day2)] == ["qwen"]
    with pytest.raises(InvalidParameter, match="cannot group usage by"):
        store.usage_summary(by="colour")  # type: ignore[arg-type]


def test_day_grouping_ignores_the_session_time_zone(store: Store, db_url: str) -> None:
    store.add_usage([_rec("late", created_at=datetime(2025, 3, 31, 23, 30, tzinfo=UTC))])
    assert store.usage_summary(by="day")[0]["day"] == "2025-03-31"
    if store.engine.dialect.name != "postgresql":
        return
    url = make_url(db_url)
    options = f"{url.query['options']} -ctimezone=Asia/Shanghai"
    shanghai = url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    with Store.open(shanghai) as other, other.engine.connect() as conn:
        assert conn.execute(text("SHOW timezone")).scalar() == "Asia/Shanghai"
        assert other.usage_summary(by="day")[0]["day"] == "2025-03-31"
        assert other.query_usage()[0].created_at == datetime(2025, 3, 31, 23, 30, tzinfo=UTC)


# -- migration ----------------------------------------------------------------------------


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


def test_api_key_repr_has_no_secret(store: Store) -> None:
    store.create_tenant("acme")
    row, secret = store.create_key(tenant="acme")
    assert isinstance(row, ApiKey)
    assert row.hash not in repr(row) and secret not in repr(row)
