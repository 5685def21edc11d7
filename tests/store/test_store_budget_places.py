"""A budget is kept to 6 decimal places (``Numeric(18, 6)``; PostgreSQL rounds to it): a
positive budget that would be kept as 0, which allows no spending, is refused for tenants
and keys alike, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from zhisuan.errors import InvalidParameter
from zhisuan.store import Store

TOO_SMALL = (
    "budget {} is under half of 0.000001, the smallest step of a budget (kept to 6 decimal "
    "places): it would be stored as 0, which allows no spending"
)


def _set_tenant(store: Store, budget: float) -> None:
    store.update_tenant("acme", budget=budget)


def _new_tenant(store: Store, budget: float) -> None:
    store.create_tenant("beta", budget=budget)


def _new_key(store: Store, budget: float) -> None:
    store.create_key(tenant="acme", budget=budget)


def _set_key(store: Store, budget: float) -> None:
    store.update_key(store.list_keys("acme")[0].prefix, budget=budget)


@pytest.mark.parametrize("write", [_new_tenant, _set_tenant, _new_key, _set_key])
@pytest.mark.parametrize("budget", [4e-7, 4.99e-7, 1e-300, 5e-324])
def test_a_budget_kept_as_zero_is_refused(
    store: Store, write: Callable[[Store, float], None], budget: float
) -> None:
    store.create_tenant("acme", budget=1.0)
    store.create_key(tenant="acme", budget=2.0)
    with pytest.raises(InvalidParameter) as err:
        write(store, budget)
    assert err.value.param == "budget"
    assert err.value.message == TOO_SMALL.format(f"{budget:g}")
    assert err.value.hint == "give 0.000001 or more, or leave the budget out for no limit"
    assert [t.name for t in store.list_tenants()] == ["acme"]
    assert store.get_tenant("acme").budget == 1.0
    assert [k.budget for k in store.list_keys("acme")] == [2.0]


@pytest.mark.parametrize("budget", [5e-7, 1e-6, 2.5e-6])
def test_the_smallest_budgets_kept_are_stored_above_zero(store: Store, budget: float) -> None:
    store.create_tenant("acme", budget=budget)
    kept = store.get_tenant("acme").budget
    assert kept is not None and kept > 0
    assert kept == pytest.approx(budget, abs=5e-7)  # PostgreSQL rounds; SQLite keeps it
