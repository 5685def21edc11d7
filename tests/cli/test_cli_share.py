"""``zhisuan tenants|keys|usage`` through the root app, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.store._records import usage_record
from typer.testing import CliRunner

from zhisuan.cli._share import parse_when
from zhisuan.cli.main import build
from zhisuan.errors import InvalidParameter
from zhisuan.store import Store

app = build([])

STABLE = {
    "tenant",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "status",
    "ttft_ms",
    "latency_ms",
    "cost",
    "energy_wh",
    "energy_source",
}


@pytest.fixture
def cli(home_env: str) -> CliRunner:
    return CliRunner()


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    monkeypatch.setattr("zhisuan.cli.serve._notify", calls.append)
    return calls


def _ok(cli: CliRunner, *args: str) -> str:
    res = cli.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def _fails(cli: CliRunner, *args: str) -> tuple[str, str]:
    res = cli.invoke(app, list(args))
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: ")
    hint = lines[1] if len(lines) > 1 else ""
    return lines[0], hint


def _record(rid: str, tenant: str, **kw: Any) -> dict[str, Any]:
    return usage_record(rid, **{"tenant": tenant, "cost": 0.25, "energy_source": "measured", **kw})


def test_tenants_create_list_show_set(
    cli: CliRunner, notified: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHISUAN_CURRENCY", "CNY")  # the platform's prices are in CNY
    out = _ok(
        cli, "tenants", "create", "acme", "--rpm", "60", "--tpm", "1000",
        "--tokens-per-day", "5000000000", "--budget", "12.5", "--max-concurrent", "4",
        "--models", "qwen,llama", "--currency", "CNY",
    )  # fmt: skip
    assert "created tenant acme" in out
    listed = json.loads(_ok(cli, "tenants", "list", "--json"))
    assert len(listed) == 1
    t = listed[0]
    assert (t["name"], t["rpm"], t["tpm"], t["tokens_per_day"]) == ("acme", 60, 1000, 5000000000)
    assert (t["budget"], t["max_concurrent"], t["models"], t["currency"]) == (
        12.5, 4, ["qwen", "llama"], "CNY",
    )  # fmt: skip
    assert "acme" in _ok(cli, "tenants", "list")
    shown = json.loads(_ok(cli, "tenants", "show", "acme", "--json"))
    assert shown["usage"]["tokens_today"] == 0 and shown["usage"]["cost_this_month"] == 0.0
    shown = _ok(cli, "tenants", "show", "acme")  # tokens/day 5,000,000,000; budget 12.5 CNY
    assert "0 used of 5,000,000,000" in shown and "0.0000 used of 12.5 CNY" in shown
    _ok(cli, "tenants", "create", "open")
    assert "0 used (unlimited)" in _ok(cli, "tenants", "show", "open")
    assert notified == []

    updated = json.loads(
        _ok(cli, "tenants", "set", "acme", "--rpm", "5", "--clear", "models", "--json")
    )
    assert updated["rpm"] == 5 and updated["models"] is None and updated["tpm"] == 1000
    assert len(notified) == 1  # a running gateway reloads limits
    assert "updated tenant acme" in _ok(cli, "tenants", "set", "acme", "--clear", "budget")


def test_tenant_errors_are_one_line_with_a_hint(cli: CliRunner) -> None:
    error, hint = _fails(cli, "tenants", "create", "Acme Corp")
    assert "invalid tenant name 'Acme Corp'" in error and "lowercase" in hint
    error, _ = _fails(cli, "tenants", "create", "acme", "--rpm", "0")
    assert "rpm must be a positive whole number" in error
    _ok(cli, "tenants", "create", "acme")
    error, hint = _fails(cli, "tenants", "create", "acme")
    assert "already exists" in error and "tenants set acme" in hint
    error, hint = _fails(cli, "tenants", "show", "acmee")
    assert "tenant 'acmee' not found" in error and hint == "hint: did you mean: acme?"
    error, _ = _fails(cli, "tenants", "set", "acme")
    assert "nothing to change" in error
    error, hint = _fails(cli, "tenants", "set", "acme", "--clear", "colour")
    assert "cannot clear 'colour'" in error and "rpm" in hint
    error, _ = _fails(cli, "tenants", "create", "beta", "--models", " , ")
    assert "--models names no model" in error
    _ok(cli, "tenants", "create", "gamma", "--models", "qwen")
    error, hint = _fails(cli, "keys", "create", "--tenant", "gamma", "--models", "qwen,glm")
    assert "tenant 'gamma' may not use 'glm', so its key cannot either" in error
    assert "tenants set gamma --models" in hint


def test_keys_create_prints_the_key_alone_on_the_last_line(
    cli: CliRunner, home_env: str, notified: list[object]
) -> None:
    _ok(cli, "tenants", "create", "acme")
    out = _ok(
        cli, "keys", "create", "--tenant", "acme", "--name", "ci", "--models", "qwen",
        "--expires", "2099-01-01", "--rpm", "3",
    )  # fmt: skip
    lines = out.rstrip("\n").split("\n")
    secret = lines[-1]
    assert secret.startswith("zs-") and " " not in secret and len(secret) > 40
    assert "not shown again" in out and out.count(secret) == 1
    with Store.open(home_env) as store:
        key = store.authenticate(secret)
    assert key is not None and key.tenant_name == "acme" and key.models == ["qwen"]
    assert key.expires_at == datetime(2099, 1, 1, tzinfo=UTC) and key.rpm == 3

    admin_secret = _ok(cli, "keys", "create", "--admin").rstrip("\n").split("\n")[-1]
    assert admin_secret.startswith("zs-") and admin_secret != secret

    listed = json.loads(_ok(cli, "keys", "list", "--json"))
    assert [k["tenant"] for k in listed] == ["acme", None]
    assert all("hash" not in k for k in listed)
    assert secret not in json.dumps(listed) and admin_secret not in json.dumps(listed)
    only_acme = json.loads(_ok(cli, "keys", "list", "--tenant", "acme", "--json"))
    assert [k["prefix"] for k in only_acme] == [secret[:12]]
    table = _ok(cli, "keys", "list")
    assert secret[:12] in table and secret not in table
    assert notified == []  # a new key needs no reload

    out = _ok(cli, "keys", "revoke", secret[:12])
    assert f"revoked {secret[:12]}" in out and len(notified) == 1
    assert json.loads(_ok(cli, "keys", "list", "--json"))[0]["status"] == "revoked"
    _ok(cli, "keys", "revoke", secret[:12])  # idempotent


def test_a_budget_is_in_the_prices_currency(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    error, hint = _fails(cli, "tenants", "create", "acme", "--budget", "5", "--currency", "cny")
    assert error == (
        "error: a budget in CNY cannot be kept: prices and costs are in USD, and are not converted"
    )
    assert "ZHISUAN_CURRENCY=CNY" in hint
    assert json.loads(_ok(cli, "tenants", "list", "--json")) == []  # nothing written
    _ok(cli, "tenants", "create", "acme", "--budget", "5")
    error, _ = _fails(cli, "tenants", "set", "acme", "--currency", "EUR")
    assert "a budget in EUR cannot be kept" in error
    monkeypatch.setenv("ZHISUAN_CURRENCY", "EUR")
    _ok(cli, "tenants", "create", "euro-team", "--budget", "5")  # the platform's, by default
    assert json.loads(_ok(cli, "tenants", "show", "euro-team", "--json"))["currency"] == "EUR"


def test_a_budget_over_unpriced_deployments_is_warned_of(cli: CliRunner, home_env: str) -> None:
    with Store.open(home_env) as store:
        for name, options in (("free", {}), ("priced", {"price_output_per_mtok": 2.0})):
            store.put_deployment(name, engine="upstream", options=options)
    res = cli.invoke(app, ["tenants", "create", "acme", "--budget", "5"])
    assert res.exit_code == 0 and "created tenant acme" in res.stdout
    warning, hint = res.stderr.strip().splitlines()
    assert warning == (
        "warning: the budget counts what requests cost, and requests to free cost nothing "
        "(no price)"
    )
    assert "zhisuan deploy MODEL --price-in X --price-out Y" in hint
    for quiet in (
        ["tenants", "create", "beta"],  # no budget
        ["tenants", "create", "gamma", "--budget", "5", "--models", "priced"],
        ["keys", "create", "--tenant", "acme", "--budget", "1", "--models", "priced"],
    ):
        res = cli.invoke(app, quiet)
        assert res.exit_code == 0 and res.stderr == "", quiet
    res = cli.invoke(app, ["keys", "create", "--tenant", "acme", "--budget", "1"])
    assert "requests to free cost nothing" in res.stderr
    assert res.stdout.strip().splitlines()[-1].startswith("zs-")  # the key still last


def test_key_errors(cli: CliRunner) -> None:
    _ok(cli, "tenants", "create", "acme")
    error, hint = _fails(cli, "keys", "create")
    assert "not both or neither" in error and "--tenant NAME" in hint
    error, _ = _fails(cli, "keys", "create", "--tenant", "acme", "--expires", "2020-01-01")
    assert "is not in the future" in error
    error, hint = _fails(cli, "keys", "create", "--tenant", "acme", "--expires", "soon")
    assert "cannot read expires 'soon' as a date" in error and "YYYY-MM-DD" in hint
    error, hint = _fails(cli, "keys", "create", "--tenant", "acm")
    assert "tenant 'acm' not found" in error and "acme" in hint
    error, hint = _fails(cli, "keys", "revoke", "zs-nothere00")  # no key comes close
    assert "no API key with prefix 'zs-nothere00'" in error
    assert hint == "hint: `zhisuan keys list` shows every key's prefix"


def test_keys_set_changes_and_clears_a_keys_own_limits(
    cli: CliRunner, notified: list[object]
) -> None:
    _ok(cli, "tenants", "create", "acme")
    prefix = _ok(cli, "keys", "create", "--tenant", "acme", "--rpm", "5").split()[-1][:12]
    told = len(notified)
    changed = json.loads(
        _ok(cli, "keys", "set", prefix, "--tpm", "900", "--models", "a,b", "--expires", "30d",
            "--name", "ci", "--json")
    )  # fmt: skip
    assert (changed["rpm"], changed["tpm"], changed["models"], changed["name"]) == (
        5, 900, ["a", "b"], "ci"
    )  # fmt: skip
    assert changed["expires_at"] is not None and changed["status"] == "active"
    cleared = json.loads(
        _ok(cli, "keys", "set", prefix, "--clear", "rpm", "--clear", "expires", "--clear",
            "models", "--json")
    )  # fmt: skip
    assert (cleared["rpm"], cleared["expires_at"], cleared["models"]) == (None, None, None)
    assert cleared["tpm"] == 900 and len(notified) == told + 2  # a running gateway is told
    assert "nothing to change" in _fails(cli, "keys", "set", prefix)[0]
    error, _ = _fails(cli, "keys", "set", prefix, "--rpm", "1", "--clear", "rpm")
    assert "both set and cleared" in error
    error, _ = _fails(cli, "keys", "set", prefix, "--expires", "2020-01-01")
    assert "is not in the future" in error
    error, _ = _fails(cli, "keys", "set", "zs-nothere00", "--rpm", "1")
    assert "no API key with prefix 'zs-nothere00'" in error
    admin = _ok(cli, "keys", "create", "--admin").split()[-1][:12]
    assert "an admin key has no limits" in _fails(cli, "keys", "set", admin, "--rpm", "1")[0]


def test_secrets_never_reach_the_logs(cli: CliRunner, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _ok(cli, "tenants", "create", "acme")
    secret = _ok(cli, "keys", "create", "--tenant", "acme").rstrip("\n").split("\n")[-1]
    _ok(cli, "keys", "revoke", secret[:12])
    assert secret[:12] in caplog.text  # prefixes are logged ...
    assert secret not in caplog.text and secret[12:] not in caplog.text  # ... secrets never


def _seed(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.create_tenant("acme")
        store.create_tenant("beta")
        store.add_usage(
            [
                _record("a1", "acme"),
                _record("a2", "acme", model="llama", status="client_abort", ttft_ms=None,
                        created_at=datetime(2025, 4, 1, 1, tzinfo=UTC)),
                _record("b1", "beta", key_prefix="zs-bbbbbbbbb", cost=1.0),
            ]
        )  # fmt: skip


def test_usage_json_is_an_array_of_stable_records(cli: CliRunner, home_env: str) -> None:
    assert json.loads(_ok(cli, "usage", "--json")) == []
    _seed(home_env)
    records = json.loads(_ok(cli, "usage", "--json"))
    assert isinstance(records, list) and len(records) == 3
    assert all(set(r) >= STABLE for r in records)
    assert [r["request_id"] for r in records] == ["a1", "b1", "a2"]  # oldest first
    assert records[2]["status"] == "client_abort" and records[2]["ttft_ms"] is None
    assert records[0]["energy_source"] == "measured" and records[0]["cost"] == 0.25
    # A tenant sees only its own requests.
    beta = json.loads(_ok(cli, "usage", "--tenant", "beta", "--json"))
    assert [r["request_id"] for r in beta] == ["b1"]
    assert {r["tenant"] for r in json.loads(_ok(cli, "usage", "--tenant", "acme", "--json"))} == {
        "acme"
    }
    assert json.loads(_ok(cli, "usage", "--tenant", "anonymous", "--json")) == []
    assert json.loads(_ok(cli, "usage", "--tenant", "admin", "--json")) == []  # admin keys' own
    newest = json.loads(_ok(cli, "usage", "--json", "--limit", "1"))
    assert [r["request_id"] for r in newest] == ["a2"]
    llama = json.loads(_ok(cli, "usage", "--model", "llama", "--json"))
    assert [r["request_id"] for r in llama] == ["a2"]
    table = _ok(cli, "usage")
    assert "acme" in table and "client_abort" in table


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        ("2025-04-01", None, ["a2"]),
        ("2025-03-31T23:30:00Z", None, ["a2"]),
        ("2025-03-31T23:30:00", "2025-04-02", ["a2"]),
        (None, "2025-04-01", ["a1", "b1"]),
        ("3650d", None, ["a1", "b1", "a2"]),
        ("24h", None, []),
    ],
)
def test_usage_since_until_forms(
    cli: CliRunner, home_env: str, since: str | None, until: str | None, expected: list[str]
) -> None:
    _seed(home_env)
    args = ["usage", "--json"]
    args += ["--since", since] if since else []
    args += ["--until", until] if until else []
    assert sorted(r["request_id"] for r in json.loads(_ok(cli, *args))) == sorted(expected)


def test_usage_csv(cli: CliRunner, home_env: str) -> None:
    _seed(home_env)
    rows = list(csv.DictReader(io.StringIO(_ok(cli, "usage", "--csv"))))
    assert [r["request_id"] for r in rows] == ["a1", "b1", "a2"]
    assert set(rows[0]) >= STABLE
    assert rows[2]["ttft_ms"] == "" and rows[0]["prompt_tokens"] == "10"
    header = _ok(cli, "usage", "--csv", "--tenant", "anonymous").strip()
    assert header.split(",")[:3] == ["request_id", "created_at", "tenant"]


@pytest.mark.parametrize("by", ["model", "key", "day", "tenant"])
def test_usage_by(cli: CliRunner, home_env: str, by: str) -> None:
    _seed(home_env)
    totals = json.loads(_ok(cli, "usage", "--by", by, "--json"))
    assert sum(t["requests"] for t in totals) == 3
    assert sum(t["errors"] for t in totals) == 1
    assert sum(t["cost"] for t in totals) == pytest.approx(1.5)
    groups = {t[by] for t in totals}
    assert (
        groups
        == {
            "model": {"qwen", "llama"},
            "key": {"zs-aaaaaaaaa", "zs-bbbbbbbbb"},
            "day": {"2025-03-31", "2025-04-01"},
            "tenant": {"acme", "beta"},
        }[by]
    )
    rows = list(csv.DictReader(io.StringIO(_ok(cli, "usage", "--by", by, "--csv"))))
    assert len(rows) == len(totals) and {"requests", "cost", by} <= set(rows[0])
    assert by in _ok(cli, "usage", "--by", by)
    scoped = json.loads(_ok(cli, "usage", "--by", by, "--tenant", "beta", "--json"))
    assert sum(t["requests"] for t in scoped) == 1


def test_usage_errors(cli: CliRunner, home_env: str) -> None:
    _seed(home_env)
    error, hint = _fails(cli, "usage", "--since", "last tuesday")
    assert "cannot read since 'last tuesday' as a date" in error and "24h" in hint
    error, hint = _fails(cli, "usage", "--by", "colour")
    assert "cannot group usage by 'colour'" in error and "model | key | day | tenant" in hint
    error, _ = _fails(cli, "usage", "--json", "--csv")
    assert "exclude each other" in error
    error, hint = _fails(cli, "usage", "--tenant", "acmee")
    assert "tenant 'acmee' not found" in error and "acme" in hint


def test_parse_when() -> None:
    now = datetime.now(UTC)
    assert parse_when("2025-03-01", param="since") == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_when("2025-03-01T08:00:00+08:00", param="since") == datetime(
        2025, 3, 1, tzinfo=UTC
    )
    assert abs(parse_when("24h", param="since") - (now - timedelta(hours=24))) < timedelta(
        seconds=5
    )
    assert parse_when("7d", param="expires", future=True) > now + timedelta(days=6)
    with pytest.raises(InvalidParameter) as info:
        parse_when("2025-13-01", param="since")
    assert info.value.param == "since"


@pytest.mark.parametrize("module", ["tenants", "keys", "usage"])
def test_cli_modules_import_no_heavy_libraries(module: str) -> None:
    code = (
        f"import sys, zhisuan.cli.{module}; "
        "print(sorted(m for m in ('torch', 'sqlalchemy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
