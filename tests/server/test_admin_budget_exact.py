"""The admin API of a real ``zhisuan serve --auth on`` judges a budget as the number the client
wrote in its JSON body, not as the float it rounds to: places a float would lose are refused
with the reason and hint the CLI prints, the amount as written; a huge or non-finite one is a
400, never a 500; a JSON string is read the same way; the schema still states a number."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server._serve import Server, start_server

pytestmark = pytest.mark.server

ADMIN = "zs-test-admin-key-exact-0123456789"
ROUTES = [
    ("POST", "/admin/tenants", '{{"name": "beta", "budget": {}}}'),
    ("PATCH", "/admin/tenants/acme", '{{"budget": {}}}'),
    ("POST", "/admin/keys", '{{"tenant": "acme", "budget": {}}}'),
    ("PATCH", "/admin/keys/{prefix}", '{{"budget": {}}}'),
]
MORE_PLACES = (
    "budget {} has more decimal places than a budget keeps (6, in steps of 0.000001): it "
    "would be rounded to {}"
)
FINITE = "give a positive number, or leave the limit out for no limit"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with auth on, a tenant ``acme`` with a budget of 5 and a key with one of 2."""
    home: Path = tmp_path_factory.mktemp("exact")
    srv = start_server(home, "--auth", "on", env={"ZHISUAN_ADMIN_KEY": ADMIN})
    try:
        srv.wait_ready(timeout=60)
        made = _call(srv, "POST", "/admin/tenants", '{"name": "acme", "budget": 5}')
        assert made.status_code == 201, made.text
        made = _call(srv, "POST", "/admin/keys", '{"tenant": "acme", "budget": 2}')
        assert made.status_code == 201, made.text
        yield srv
    finally:
        srv.stop()


def _call(srv: Server, method: str, path: str, body: str | None = None) -> httpx.Response:
    """``body`` sent as written: a JSON encoder would write a float's shortest digits."""
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    return httpx.request(method, f"{srv.url}{path}", headers=headers, content=body, timeout=30)


def _prefix(srv: Server) -> str:
    return str(_call(srv, "GET", "/admin/keys?tenant=acme").json()[0]["prefix"])


def _send(srv: Server, route: tuple[str, str, str], budget: str) -> httpx.Response:
    method, path, body = route
    return _call(srv, method, path.format(prefix=_prefix(srv)), body.format(budget))


def _unchanged(srv: Server) -> None:
    tenants = {t["name"]: t["budget"] for t in _call(srv, "GET", "/admin/tenants").json()}
    assert (tenants["acme"], "beta" in tenants) == (5.0, False)
    keys = _call(srv, "GET", "/admin/keys?tenant=acme").json()
    assert [k["budget"] for k in keys] == [2.0]


def _error(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "budget",
        "invalid_parameter",
    )
    return error


@pytest.mark.parametrize(
    ("written", "shown", "rounded", "hint"),
    [
        ("1.00000000000000001", "1.00000000000000001", "1", "1 or 1.000001"),
        ("0.1000000000000000055511151231257827", "0.1000000000000000055511151231257827",
         "0.1", "0.1 or 0.100001"),
        ("1.0000004", "1.0000004", "1", "1 or 1.000001"),
        ('"1.00000000000000001"', "1.00000000000000001", "1", "1 or 1.000001"),  # a string
        ("12.5E-7", "0.00000125", "0.000001", "0.000001 or 0.000002"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("route", ROUTES)
def test_places_a_float_would_lose_are_refused(
    gateway: Server,
    route: tuple[str, str, str],
    written: str,
    shown: str,
    rounded: str,
    hint: str,
) -> None:
    error = _error(_send(gateway, route, written))
    assert error["message"] == MORE_PLACES.format(shown, rounded)
    assert error["hint"] == f"give at most 6 decimal places, e.g. {hint}"
    _unchanged(gateway)


def test_the_cli_says_the_same(gateway: Server) -> None:
    done = gateway.cli("tenants", "set", "acme", "--budget", "1.00000000000000001", check=False)
    assert done.returncode == 2, done.stderr
    error = _error(_send(gateway, ROUTES[1], "1.00000000000000001"))
    said = [f"error: {error['message']}", f"hint: {error['hint']}"]
    assert done.stderr.strip().splitlines() == said


@pytest.mark.parametrize(
    ("written", "message", "hint"),
    [
        ("1e400", "budget 1e+400 is too large (at most 1e+12)", "leave a limit out for no limit"),
        ('"1e400"', "budget 1e+400 is too large (at most 1e+12)",
         "leave a limit out for no limit"),
        ("1e99999999999999999999", "budget must be a finite number, got inf", FINITE),
        ("-1e400", "budget must be a positive amount, got -1e+400",
         "leave a limit out (or clear it) for no limit"),
        ("NaN", "budget must be a finite number, got nan", FINITE),
        ("-Infinity", "budget must be a finite number, got -inf", FINITE),
        ('"inf"', "budget must be a finite number, got inf", FINITE),
        ("1e-400", "budget 1e-400 is under half of 0.000001, the smallest step of a budget "
         "(kept to 6 decimal places): it would be stored as 0, which allows no spending",
         "give 0.000001 or more, or leave the budget out for no limit"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("route", ROUTES)
def test_a_huge_or_non_finite_budget_is_a_400(
    gateway: Server, route: tuple[str, str, str], written: str, message: str, hint: str
) -> None:
    error = _error(_send(gateway, route, written))
    assert (error["message"], error["hint"]) == (message, hint)
    _unchanged(gateway)


@pytest.mark.parametrize("route", ROUTES)
def test_a_boolean_is_no_budget(gateway: Server, route: tuple[str, str, str]) -> None:
    error = _error(_send(gateway, route, "true"))  # was taken as a budget of 1
    assert error["message"].startswith("Invalid value for 'budget': ")
    _unchanged(gateway)


@pytest.mark.parametrize(
    ("name", "written", "stored"),
    [
        ("one", "1.000001", 1.000001),
        ("two", '"2.5"', 2.5),  # a string, as before
        ("three", "123456.1234560000", 123456.123456),
        ("four", "1e-6", 1e-6),
    ],
)
def test_a_budget_of_whole_steps_is_kept_as_written(
    gateway: Server, name: str, written: str, stored: float
) -> None:
    made = _call(gateway, "POST", "/admin/tenants", f'{{"name": "{name}", "budget": {written}}}')
    assert made.status_code == 201, made.text
    assert made.json()["budget"] == stored
    key = _call(gateway, "POST", "/admin/keys", f'{{"tenant": "{name}", "budget": {written}}}')
    assert key.status_code == 201 and key.json()["budget"] == stored
    prefix = key.json()["prefix"]
    for path in (f"/admin/tenants/{name}", f"/admin/keys/{prefix}"):
        changed = _call(gateway, "PATCH", path, f'{{"budget": {written}, "rpm": 7}}')
        assert changed.status_code == 200 and changed.json()["budget"] == stored
    assert _call(gateway, "GET", f"/admin/tenants/{name}").json()["budget"] == stored
    keys = _call(gateway, "GET", f"/admin/keys?tenant={name}").json()
    assert [(k["budget"], k["rpm"]) for k in keys] == [(stored, 7)]


def test_the_schema_still_states_a_positive_number(gateway: Server) -> None:
    schemas = _call(gateway, "GET", "/openapi.json").json()["components"]["schemas"]
    for model in ("TenantIn", "TenantChange", "KeyIn", "KeyChange"):
        budget = schemas[model]["properties"]["budget"]
        stated = [s for s in budget["anyOf"] if s.get("type") != "null"]
        assert stated == [{"type": "number", "exclusiveMinimum": 0}], model
        assert "6 decimal places" in budget["description"]
