"""A change made through the CLI is announced to the running gateway, and a refusal is said."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar

import pytest
from _fake_gateway import JsonHandler, fake_gateway
from typer.testing import CliRunner

from zhisuan.cli.main import build

app = build([])
ADMIN = "zs-notify-admin-key-0123456789"


class _Gateway(JsonHandler):
    """``POST /admin/reconcile`` as the gateway answers it: 401 without the admin key."""

    calls: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        auth = self.headers.get("Authorization")
        self.calls.append(auth)
        ok = self.path == "/admin/reconcile" and auth == f"Bearer {ADMIN}"
        body = b"[]" if ok else json.dumps({"error": {"message": "no key"}}).encode()
        self.answer(200 if ok else 401, body)


@pytest.fixture
def gateway(home_env: str) -> Iterator[list[str | None]]:
    _Gateway.calls = []
    with fake_gateway(_Gateway):
        yield _Gateway.calls


def test_a_gateway_that_refuses_the_reload_is_reported(gateway: list[str | None]) -> None:
    assert CliRunner().invoke(app, ["tenants", "create", "team-a"]).exit_code == 0
    result = CliRunner().invoke(app, ["tenants", "set", "team-a", "--rpm", "5"])
    assert result.exit_code == 0, result.output
    assert gateway == [None]
    assert "did not reload (HTTP 401)" in result.stderr
    assert "ZHISUAN_ADMIN_KEY" in result.stderr
    assert "Traceback" not in result.output


def test_a_reload_with_the_admin_key_is_silent(
    gateway: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHISUAN_ADMIN_KEY", ADMIN)
    assert CliRunner().invoke(app, ["tenants", "create", "team-b"]).exit_code == 0
    result = CliRunner().invoke(app, ["tenants", "set", "team-b", "--rpm", "5"])
    assert result.exit_code == 0, result.output
    assert gateway == [f"Bearer {ADMIN}"]
    assert result.stderr == ""
