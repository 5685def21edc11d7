"""A budget given as a :class:`~decimal.Decimal` (what the admin API and the CLI read, as the
client wrote it) is judged as that decimal, not as the float it rounds to: extra places that a
float would lose are refused like any others, with the amount shown as written; a decimal of
whole steps is stored as the float it reads back as, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from tests.store._budget_writes import WRITES

from zhisuan.errors import InvalidParameter
from zhisuan.store import Store

MORE_PLACES = (
    "budget {} has more decimal places than a budget keeps (6, in steps of 0.000001): it "
    "would be rounded to {}"
)


def _unchanged(store: Store) -> None:
    assert [(t.name, t.budget) for t in store.list_tenants()] == [("acme", 1.0)]
    assert [k.budget for k in store.list_keys("acme")] == [2.0]


@pytest.fixture
def acme(store: Store) -> Store:
    store.create_tenant("acme", budget=1.0)
    store.create_key(tenant="acme", budget=2.0)
    return store


@pytest.mark.parametrize(
    ("written", "rounded", "hint"),
    [
        ("1.00000000000000001", "1", "1 or 1.000001"),  # the float is 1.0
        ("0.1000000000000000055511151231257827", "0.1", "0.1 or 0.100001"),  # 0.1's float
        ("1.0000000000000000000000000000000001", "1", "1 or 1.000001"),  # past 28 digits
        ("999999.9999995", "1000000", "999999.999999 or 1000000"),
    ],
)
@pytest.mark.parametrize("write", WRITES)
def test_places_a_float_would_lose_are_refused(
    acme: Store, write: Callable[[Store, Decimal], None], written: str, rounded: str, hint: str
) -> None:
    with pytest.raises(InvalidParameter) as err:
        write(acme, Decimal(written))
    assert err.value.param == "budget"
    assert err.value.message == MORE_PLACES.format(written, rounded)
    assert err.value.hint == f"give at most 6 decimal places, e.g. {hint}"
    _unchanged(acme)


@pytest.mark.parametrize(
    ("written", "message", "hint"),
    [
        ("0.0000004999999999999999999", "budget 0.0000004999999999999999999 is under half of "
         "0.000001, the smallest step of a budget (kept to 6 decimal places): it would be "
         "stored as 0, which allows no spending",
         "give 0.000001 or more, or leave the budget out for no limit"),
        ("1E-400", "budget 1e-400 is under half of 0.000001, the smallest step of a budget "
         "(kept to 6 decimal places): it would be stored as 0, which allows no spending",
         "give 0.000001 or more, or leave the budget out for no limit"),
        ("1E+400", "budget 1e+400 is too large (at most 1e+12)", "leave a limit out for no limit"),
        ("1000000000000.000000", "budget 1000000000000.000000 is too large (at most 1e+12)",
         "leave a limit out for no limit"),
        ("0", "budget must be a positive amount, got 0",
         "leave a limit out (or clear it) for no limit"),
        ("-2.50", "budget must be a positive amount, got -2.50",
         "leave a limit out (or clear it) for no limit"),
        ("NaN", "budget must be a finite number, got nan",
         "give a positive number, or leave the limit out for no limit"),
        ("sNaN", "budget must be a finite number, got nan",
         "give a positive number, or leave the limit out for no limit"),
        ("-Infinity", "budget must be a finite number, got -inf",
         "give a positive number, or leave the limit out for no limit"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("write", WRITES)
def test_a_decimal_out_of_range_is_refused_as_written(
    acme: Store, write: Callable[[Store, Decimal], None], written: str, message: str, hint: str
) -> None:
    with pytest.raises(InvalidParameter) as err:
        write(acme, Decimal(written))
    assert (err.value.param, err.value.message, err.value.hint) == ("budget", message, hint)
    _unchanged(acme)


@pytest.mark.parametrize(
    "written", ["0.000001", "0.0000010000", "1.000001", "123456.123456", "999999999999", "5E+3"]
)
def test_a_decimal_of_whole_steps_is_stored_as_its_float(store: Store, written: str) -> None:
    store.create_tenant("acme", budget=Decimal(written))
    store.create_key(tenant="acme", budget=Decimal(written))
    store.create_tenant("beta", budget=1.0)
    store.update_tenant("beta", budget=Decimal(written))
    expected = float(written)
    assert [t.budget for t in store.list_tenants()] == [expected, expected]
    assert [k.budget for k in store.list_keys("acme")] == [expected]
