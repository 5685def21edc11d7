"""The four ways a budget is written to the store: a new tenant, a tenant's change, a new
key, a key's change (the budget tests run each check through all four)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from zhisuan.store import Store

Amount = float | Decimal


def _new_tenant(store: Store, budget: Amount) -> None:
    store.create_tenant("beta", budget=budget)


def _set_tenant(store: Store, budget: Amount) -> None:
    store.update_tenant("acme", budget=budget)


def _new_key(store: Store, budget: Amount) -> None:
    store.create_key(tenant="acme", budget=budget)


def _set_key(store: Store, budget: Amount) -> None:
    store.update_key(store.list_keys("acme")[0].prefix, budget=budget)


WRITES: list[Callable[[Store, Amount], None]] = [_new_tenant, _set_tenant, _new_key, _set_key]
