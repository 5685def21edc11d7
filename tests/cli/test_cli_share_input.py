"""Mistakes in what ``zhisuan tenants|keys|usage`` are given, on the command line or in the
environment: a one-line error with a hint, never a traceback, nothing written; and budgets
shown with every digit they are stored with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from zhisuan.cli._share import parse_when, show_money
from zhisuan.cli.main import build
from zhisuan.errors import InvalidParameter

app = build([])


@pytest.fixture
def cli(home_env: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr("zhisuan.cli.serve._notify", lambda settings: None)
    return CliRunner()


def _ok(cli: CliRunner, *args: str) -> str:
    res = cli.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def _fails(cli: CliRunner, *args: str) -> tuple[str, str]:
    res = cli.invoke(app, list(args))
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    error, hint = res.stderr.strip().splitlines()
    return error, hint


@pytest.mark.parametrize(
    "args",
    [
        ("usage", "--since", "1000000000d"),  # more days than a timedelta holds
        ("usage", "--since", "800000d"),  # before year 1
        ("usage", "--until", "0001-01-01T00:00:00+01:00"),  # year 0 in UTC
        ("keys", "create", "--tenant", "acme", "--expires", "3000000d"),  # after year 9999
        ("keys", "create", "--tenant", "acme", "--expires", "9999-12-31T23:00:00-05:00"),
        ("keys", "set", "PREFIX", "--expires", "9999-12-31T23:00:00-05:00"),
    ],
)
def test_a_date_out_of_range_is_one_line(cli: CliRunner, args: tuple[str, ...]) -> None:
    _ok(cli, "tenants", "create", "acme")
    prefix = _ok(cli, "keys", "create", "--tenant", "acme").split()[-1][:12]
    error, hint = _fails(cli, *(prefix if a == "PREFIX" else a for a in args))
    assert f"error: {args[-2].lstrip('-')} {args[-1]!r} is out of range" in error
    assert hint == "hint: give a date between 0001-01-02 and 9999-12-30, or a shorter span"
    listed = json.loads(_ok(cli, "keys", "list", "--json"))
    assert [(k["prefix"], k["expires_at"]) for k in listed] == [(prefix, None)]


def test_parse_when_refuses_a_time_out_of_range() -> None:
    for text, future in (
        ("9" * 400 + "s", True),  # an infinite span
        ("9999-12-31T23:00:00-05:00", True),
        ("3000000d", True),
        ("800000d", False),
    ):
        with pytest.raises(InvalidParameter, match="out of range") as info:
            parse_when(text, param="expires", future=future)
        assert info.value.param == "expires"
    assert parse_when("9999-12-31T23:00:00+00:00", param="expires").year == 9999  # the edge


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_budget_must_be_a_finite_number(cli: CliRunner, value: str) -> None:
    _ok(cli, "tenants", "create", "acme", "--budget", "5")
    prefix = _ok(cli, "keys", "create", "--tenant", "acme", "--budget", "2").split()[-1][:12]
    for args in (
        ("tenants", "create", "beta", "--budget", value),
        ("tenants", "set", "acme", "--budget", value),
        ("keys", "create", "--tenant", "acme", "--budget", value),
        ("keys", "set", prefix, "--budget", value),
    ):
        error, hint = _fails(cli, *args)
        assert error == f"error: budget must be a finite number, got {float(value)!r}", args
        assert hint == "hint: give a positive number, or leave the limit out for no limit"
    tenants = json.loads(_ok(cli, "tenants", "list", "--json"))
    assert [(t["name"], t["budget"]) for t in tenants] == [("acme", 5.0)]
    assert [k["budget"] for k in json.loads(_ok(cli, "keys", "list", "--json"))] == [2.0]


def test_a_budget_is_shown_with_every_digit(cli: CliRunner) -> None:
    out = _ok(cli, "tenants", "create", "big", "--budget", "1234567.89")
    assert "(budget 1,234,567.89 USD/month)" in out
    assert "1,234,567.89 USD" in _ok(cli, "tenants", "list")
    assert "0.0000 used of 1,234,567.89 USD" in _ok(cli, "tenants", "show", "big")
    out = _ok(cli, "tenants", "set", "big", "--budget", "0.000001")
    assert "(budget 0.000001 USD/month)" in out
    _ok(cli, "keys", "create", "--tenant", "big", "--budget", "2345678.5")
    assert "budget 2,345,678.5" in _ok(cli, "keys", "list")


def test_show_money() -> None:
    assert show_money(1234567.89) == "1,234,567.89"
    assert show_money(100.0) == "100"
    assert show_money(12.5) == "12.5"
    assert show_money(0.000001) == "0.000001"
    assert show_money(999_999_999_999.0) == "999,999,999,999"
    assert show_money(123_456_789.123456) == "123,456,789.123456"


@pytest.mark.parametrize(
    "args", [("tenants", "list"), ("usage",), ("keys", "create", "--tenant", "acme"), ("serve",)]
)
def test_a_bad_setting_is_one_line_naming_its_variable(
    home_env: str, args: tuple[str, ...]
) -> None:
    env = {**os.environ, "ZHISUAN_PORT": "abc"}
    done = subprocess.run(
        [sys.executable, "-m", "zhisuan", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: invalid setting ZHISUAN_PORT='abc': input should be a valid integer, unable "
        "to parse string as an integer",
        "hint: correct ZHISUAN_PORT in the environment, or unset it for the default",
    ]


def test_serve_refuses_a_port_out_of_range_as_its_flag(home_env: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "zhisuan", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "ZHISUAN_PORT" not in done.stderr
    assert "Invalid value for '--port'" in done.stderr


def test_usage_limit_and_by_exclude_each_other(cli: CliRunner) -> None:
    error, hint = _fails(cli, "usage", "--by", "model", "--limit", "5")
    assert error == "error: --limit counts requests, and --by gives totals"
    assert hint == "hint: use one or the other"
