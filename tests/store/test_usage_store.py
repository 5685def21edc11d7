"""Usage records: stored once, queried, summed per group and per day, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from tests.store._records import T0
from tests.store._records import usage_record as _rec

from zhisuan.errors import InvalidParameter
from zhisuan.store import Store

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
    assert by_model["qwen"]["requests"] == 3 and by_model["qwen"]["errors"] == 1
    assert by_model["qwen"]["refused"] == 1 and by_model["glm"]["refused"] == 1
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
