"""``zhisuan tenants delete``: asks first (or takes ``--yes``), revokes the tenant's keys,
keeps its usage, and leaves its name free; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from tests.store._records import usage_record
from typer.testing import CliRunner

from zhisuan.cli.main import build
from zhisuan.store import ApiKey, Store

app = build([])


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    monkeypatch.setattr("zhisuan.cli.serve._notify", calls.append)
    return calls


def _run(*args: str, code: int = 0, given: str | None = None) -> tuple[str, str]:
    res = CliRunner().invoke(app, list(args), input=given)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res.stdout, res.stderr


def test_delete_revokes_the_keys_and_keeps_the_usage(
    home_env: str, notified: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    _run("tenants", "create", "acme")
    key = _run("keys", "create", "--tenant", "acme")[0].rstrip("\n").split("\n")[-1]
    with Store.open(home_env) as store:
        store.add_usage([usage_record("r1", tenant="acme")])
    _, err = _run("tenants", "delete", "acme", code=2)  # no terminal to ask on, no --yes
    assert err.splitlines() == [
        "error: not deleting tenant acme without a confirmation",
        "hint: add --yes",
    ]
    monkeypatch.setattr("zhisuan.cli.tenants._interactive", lambda: True)
    out, err = _run("tenants", "delete", "acme", code=1, given="n\n")  # asked: no
    assert "delete tenant acme and revoke its 1 key(s)?" in out
    assert err.splitlines() == ["error: tenant acme was not deleted"]
    assert notified == []
    with Store.open(home_env) as store:
        assert store.get_tenant("acme").deleted_at is None
    out, _ = _run("tenants", "delete", "acme", "--yes")
    assert "deleted tenant acme and revoked 1 key(s); its usage stays" in out
    assert len(notified) == 1  # a running gateway refuses the keys at once
    with Store.open(home_env) as store:
        assert store.authenticate(key) is not None
        assert store.authenticate(key).status() == "revoked"  # type: ignore[union-attr]
    assert json.loads(_run("tenants", "list", "--json")[0]) == []
    _, err = _run("tenants", "show", "acme", code=2)
    assert err.startswith("error: tenant 'acme' was deleted on ")
    assert "zhisuan usage --tenant acme" in err and "tenants create acme" in err
    rows = json.loads(_run("usage", "--tenant", "acme", "--json")[0])
    assert [r["tenant"] for r in rows] == ["acme"]
    listed = json.loads(_run("keys", "list", "--tenant", "acme", "--json")[0])
    assert [k["status"] for k in listed] == ["revoked"]
    _, err = _run("tenants", "delete", "acme", "--yes", code=2)
    assert "was deleted on" in err
    _run("tenants", "create", "acme", "--rpm", "5")  # the name comes back
    assert json.loads(_run("tenants", "show", "acme", "--json")[0])["rpm"] == 5


def test_delete_an_unknown_tenant_names_close_ones(home_env: str) -> None:
    _run("tenants", "create", "acme")
    _, err = _run("tenants", "delete", "acmee", "--yes", code=2)
    assert err.splitlines() == ["error: tenant 'acmee' not found", "hint: did you mean: acme?"]


def test_delete_asks_about_every_key_it_revokes_and_never_about_a_deleted_tenant(
    home_env: str, notified: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    _run("tenants", "create", "acme")
    _run("keys", "create", "--tenant", "acme")
    revoked = _run("keys", "create", "--tenant", "acme")[0].split()[-1][:12]
    _run("keys", "revoke", revoked)
    expired = _run("keys", "create", "--tenant", "acme")[0].split()[-1][:12]
    with Store.open(home_env) as store, store.engine.begin() as conn:  # its end passed
        gone = datetime(2001, 1, 1, tzinfo=UTC)
        conn.execute(update(ApiKey).where(ApiKey.prefix == expired).values(expires_at=gone))
    monkeypatch.setattr("zhisuan.cli.tenants._interactive", lambda: True)
    out, _ = _run("tenants", "delete", "acme", code=1, given="n\n")
    assert "delete tenant acme and revoke its 2 key(s)?" in out  # the expired one too
    out, _ = _run("tenants", "delete", "acme", given="y\n")
    assert "deleted tenant acme and revoked 2 key(s)" in out
    out, err = _run("tenants", "delete", "acme", code=2, given="y\n")
    assert out == ""  # not asked: there is nothing to delete
    assert err.startswith("error: tenant 'acme' was deleted on ")
    assert "tenants create acme" in err
