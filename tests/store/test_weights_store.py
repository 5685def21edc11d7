"""A tenant's weight in the replicas' queues, in the store: 1 unless given, kept, changed,
refused outside 1-100 with a hint; and revision 0004, which adds it (every tenant there is
gets 1) and takes it away again. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from zhisuan.errors import InvalidParameter
from zhisuan.store import Store, alembic_config, current_revision, make_engine, upgrade

HINT = (
    "give 1 to 100 (the default is 1): a tenant of weight N has up to N requests started per "
    "turn in a replica's queue"
)


def test_a_tenant_weighs_1_unless_given_another(store: Store) -> None:
    assert store.create_tenant("plain").weight == 1
    made = store.create_tenant("research", weight=3, rpm=10)
    assert (made.weight, made.to_dict()["weight"]) == (3, 3)
    assert {t.name: t.weight for t in store.list_tenants()} == {"plain": 1, "research": 3}
    assert store.get_tenant("research").weight == 3


def test_a_weight_is_changed_alone_and_none_puts_the_default_back(store: Store) -> None:
    store.create_tenant("acme", rpm=5, weight=2)
    changed = store.update_tenant("acme", weight=100)
    assert (changed.weight, changed.rpm) == (100, 5)  # the rest as it was
    assert store.get_tenant("acme").weight == 100
    store.update_tenant("acme", rpm=7)
    assert store.get_tenant("acme").weight == 100  # a change of limits keeps it
    assert store.update_tenant("acme", weight=None).weight == 1


def test_a_deleted_tenant_created_again_takes_the_weight_given_then(store: Store) -> None:
    store.create_tenant("acme", weight=5)
    store.delete_tenant("acme")
    assert store.create_tenant("acme").weight == 1
    store.delete_tenant("acme")
    assert store.create_tenant("acme", weight=4).weight == 4


@pytest.mark.parametrize("weight", [0, -1, 101, 10**9, 2.5, float("nan"), float("inf"), True])
def test_a_weight_outside_1_to_100_is_refused_with_a_hint(store: Store, weight: Any) -> None:
    with pytest.raises(InvalidParameter) as made:
        store.create_tenant("acme", weight=weight)
    assert made.value.message == f"weight must be a whole number from 1 to 100, got {weight!r}"
    assert (made.value.param, made.value.hint) == ("weight", HINT)
    assert store.list_tenants() == []
    store.create_tenant("beta", weight=2)
    with pytest.raises(InvalidParameter) as changed:
        store.update_tenant("beta", weight=weight)
    assert (changed.value.message, changed.value.hint) == (made.value.message, HINT)
    assert store.get_tenant("beta").weight == 2


def test_a_whole_float_is_a_weight(store: Store) -> None:
    assert store.create_tenant("acme", weight=3.0).weight == 3  # as JSON may carry it


def test_an_unknown_field_names_the_weight_among_those_there_are(store: Store) -> None:
    store.create_tenant("acme")
    with pytest.raises(InvalidParameter) as info:
        store.update_tenant("acme", share=3)
    assert info.value.hint is not None and info.value.hint.endswith("currency, weight")


def _migrate(engine: Any, way: str, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, way)(cfg, revision)


def _columns(engine: Any) -> set[str]:
    with engine.connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns("tenants")}


def test_migration_0004_gives_every_tenant_weight_1_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        _migrate(engine, "upgrade", "0003")
        assert "weight" not in _columns(engine)
        row = "INSERT INTO tenants (name, currency, created_at) VALUES (:n, 'USD', :t)"
        with engine.begin() as conn:
            for name in ("acme", "beta"):
                conn.execute(text(row), {"n": name, "t": datetime(2026, 1, 1, tzinfo=UTC)})

        assert upgrade(engine) is True  # to 0004: the tenants there are weigh 1
        store = Store(engine)
        assert {t.name: t.weight for t in store.list_tenants()} == {"acme": 1, "beta": 1}
        store.update_tenant("acme", weight=7)
        store.create_tenant("gamma", weight=2)
        with engine.begin() as conn:  # a row written without it, by SQL, weighs 1 too
            conn.execute(text(row), {"n": "delta", "t": datetime(2026, 1, 2, tzinfo=UTC)})
        assert store.get_tenant("delta").weight == 1

        _migrate(engine, "downgrade", "0003")
        with engine.connect() as conn:
            assert current_revision(conn) == "0003"
            names = conn.execute(text("SELECT name FROM tenants ORDER BY name")).scalars()
            assert names.all() == ["acme", "beta", "delta", "gamma"]  # every tenant stays
        assert "weight" not in _columns(engine)

        assert upgrade(engine) is True  # up again: the weights dropped are gone, 1 for all
        weights = {t.name: t.weight for t in Store(engine).list_tenants()}
        assert weights == {"acme": 1, "beta": 1, "delta": 1, "gamma": 1}
    finally:
        engine.dispose()
