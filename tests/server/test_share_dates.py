"""Times given to the admin API and ``/v1/usage`` of a real ``zhisuan serve --auth on``: a
naive one is UTC, and one that falls outside years 1-9999 in UTC is a 400 naming its field,
never a 500 (after a write: a new key's secret lost)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server._serve import Server, start_server

pytestmark = pytest.mark.server

ADMIN = "zs-test-admin-key-dates-0123456789"
TOO_EARLY = "0001-01-01T00:00:00+01:00"  # year 0 in UTC
TOO_LATE = "9999-12-31T23:00:00-05:00"  # year 10000 in UTC


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with auth on and nothing deployed."""
    home: Path = tmp_path_factory.mktemp("dates")
    srv = start_server(home, "--auth", "on", env={"ZHISUAN_ADMIN_KEY": ADMIN})
    try:
        srv.wait_ready(timeout=60)
        yield srv
    finally:
        srv.stop()


def _call(srv: Server, method: str, path: str, key: str = ADMIN, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, f"{srv.url}{path}", headers=headers, timeout=30, **kw)


def _keys(srv: Server, tenant: str) -> list[tuple[str, str | None]]:
    listed = _call(srv, "GET", "/admin/keys", params={"tenant": tenant}).json()
    return [(k["prefix"], k["expires_at"]) for k in listed]


def test_a_naive_expiry_is_utc(gateway: Server) -> None:
    assert _call(gateway, "POST", "/admin/tenants", json={"name": "naive"}).status_code == 201
    body = {"tenant": "naive", "expires_at": "2999-01-01T00:00:00"}
    made = _call(gateway, "POST", "/admin/keys", json=body)
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["key"].startswith("zs-") and key["status"] == "active"
    assert key["expires_at"] == "2999-01-01T00:00:00+00:00"
    later = {"expires_at": "2998-06-01T12:00:00"}
    changed = _call(gateway, "PATCH", f"/admin/keys/{key['prefix']}", json=later)
    assert changed.status_code == 200, changed.text
    assert changed.json()["expires_at"] == "2998-06-01T12:00:00+00:00"
    assert _keys(gateway, "naive") == [(key["prefix"], "2998-06-01T12:00:00+00:00")]


def test_a_time_outside_years_1_to_9999_is_a_400_naming_its_field(gateway: Server) -> None:
    assert _call(gateway, "POST", "/admin/tenants", json={"name": "dates"}).status_code == 201
    key = _call(gateway, "POST", "/admin/keys", json={"tenant": "dates"}).json()
    prefix, secret = key["prefix"], key["key"]
    asked: list[tuple[str, str, str, dict[str, Any], str]] = [
        (ADMIN, "POST", "/admin/keys", {"json": {"tenant": "dates", "expires_at": TOO_LATE}},
         "expires_at"),
        (ADMIN, "PATCH", f"/admin/keys/{prefix}", {"json": {"expires_at": TOO_LATE}},
         "expires_at"),
        (ADMIN, "GET", "/admin/usage", {"params": {"since": TOO_LATE}}, "since"),
        (ADMIN, "GET", "/admin/usage", {"params": {"by": "day", "since": TOO_EARLY}}, "since"),
        (ADMIN, "GET", "/admin/usage", {"params": {"until": TOO_EARLY}}, "until"),
        (secret, "GET", "/v1/usage", {"params": {"since": TOO_EARLY}}, "since"),
        (secret, "GET", "/v1/usage", {"params": {"by": "model", "until": TOO_LATE}}, "until"),
    ]  # fmt: skip
    for who, method, path, kw, param in asked:
        resp = _call(gateway, method, path, key=who, **kw)
        assert resp.status_code == 400, (method, path, resp.text)
        error = resp.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error", "invalid_parameter", param,
        )  # fmt: skip
        assert "is out of range: in UTC it falls outside years 1-9999" in error["message"]
    assert _keys(gateway, "dates") == [(prefix, None)]  # nothing written
