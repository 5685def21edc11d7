"""A budget is kept to 6 decimal places (``Numeric(18, 6)``; PostgreSQL rounds to it,
SQLite keeps what it is given): a positive budget that would be kept as 0, which allows no
spending, or one with more decimal places, is refused for tenants and keys alike, on SQLite
and PostgreSQL; one of whole steps is stored as given."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.store._budget_writes import WRITES

from zhisuan.errors import InvalidParameter
from zhisuan.store import Store

TOO_SMALL = (
    "budget {} is under half of 0.000001, the smallest step of a budget (kept to 6 decimal "
    "places): it would be stored as 0, which allows no spending"
)


@pytest.mark.parametrize("write", WRITES)
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


@pytest.mark.parametrize(
    ("budget", "shown", "rounded", "hint"),
    [
        (1.0000004, "1.0000004", "1", "1 or 1.000001"),
        (5e-7, "0.0000005", "0.000001", "0.000001"),
        (2.5e-6, "0.0000025", "0.000003", "0.000002 or 0.000003"),
        (123.4567891, "123.4567891", "123.456789", "123.456789 or 123.45679"),
    ],
)
@pytest.mark.parametrize("write", WRITES)
def test_a_budget_with_more_places_than_kept_is_refused(
    store: Store,
    write: Callable[[Store, float], None],
    budget: float,
    shown: str,
    rounded: str,
    hint: str,
) -> None:
    store.create_tenant("acme", budget=1.0)
    store.create_key(tenant="acme", budget=2.0)
    with pytest.raises(InvalidParameter) as err:
        write(store, budget)
    assert err.value.param == "budget"
    assert err.value.message == (
        f"budget {shown} has more decimal places than a budget keeps (6, in steps of "
        f"0.000001): it would be rounded to {rounded}"
    )
    assert err.value.hint == f"give at most 6 decimal places, e.g. {hint}"
    assert store.get_tenant("acme").budget == 1.0
    assert [k.budget for k in store.list_keys("acme")] == [2.0]


@pytest.mark.parametrize("budget", [1e-6, 2e-6, 0.1, 1.000001, 123456.123456, 999_999_999_999])
def test_a_budget_of_whole_steps_is_stored_as_given(store: Store, budget: float) -> None:
    store.create_tenant("acme", budget=budget)
    store.create_key(tenant="acme", budget=budget)
    assert store.get_tenant("acme").budget == budget  # on PostgreSQL and SQLite alike
    assert [k.budget for k in store.list_keys("acme")] == [budget]
