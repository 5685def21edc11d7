"""A tenant's weight through ``zhisuan tenants create|set|list|show``: given, changed, shown
in the tables and the JSON, refused outside 1-100 in one line with a hint (nothing written).
On SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from zhisuan.cli.main import build

app = build([])
REFUSED = "error: weight must be a whole number from 1 to 100, got {}"
HINT = (
    "hint: give 1 to 100 (the default is 1): a tenant of weight N has up to N requests "
    "started per turn in a replica's queue"
)


@pytest.fixture
def cli(home_env: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr("zhisuan.cli.serve._notify", lambda settings: None)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _ok(cli: CliRunner, *args: str) -> str:
    res = cli.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def _fails(cli: CliRunner, *args: str) -> list[str]:
    res = cli.invoke(app, list(args))
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.stderr.strip().splitlines()


def _weights(cli: CliRunner) -> dict[str, int]:
    return {t["name"]: t["weight"] for t in json.loads(_ok(cli, "tenants", "list", "--json"))}


def _row(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if f" {name} " in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_a_weight_is_given_changed_and_shown(cli: CliRunner) -> None:
    out = _ok(cli, "tenants", "create", "research", "--weight", "3", "--rpm", "60")
    assert "created tenant research (rpm 60; weight 3)" in out
    made = json.loads(_ok(cli, "tenants", "create", "plain", "--json"))
    assert made["weight"] == 1
    assert "(no limits)" in _ok(cli, "tenants", "create", "quiet")  # weight 1 goes unsaid
    assert _weights(cli) == {"plain": 1, "quiet": 1, "research": 3}

    table = _ok(cli, "tenants", "list")
    assert "weight" in table.splitlines()[1]
    assert _row(table, "research")[-1] == "3" and _row(table, "plain")[-1] == "1"

    changed = json.loads(_ok(cli, "tenants", "set", "plain", "--weight", "5", "--json"))
    assert (changed["weight"], changed["rpm"]) == (5, None)
    assert "updated tenant research (rpm 30; weight 3)" in _ok(
        cli, "tenants", "set", "research", "--rpm", "30"
    )  # a change of limits keeps the weight
    assert _weights(cli) == {"plain": 5, "quiet": 1, "research": 3}

    shown = json.loads(_ok(cli, "tenants", "show", "plain", "--json"))
    assert shown["weight"] == 5
    assert _row(_ok(cli, "tenants", "show", "plain"), "weight") == ["weight", "5"]
    _ok(cli, "tenants", "set", "plain", "--weight", "1")  # the default back
    assert _weights(cli)["plain"] == 1


@pytest.mark.parametrize("weight", ["0", "101", "-3"])
def test_a_weight_outside_1_to_100_is_one_line_with_a_hint(cli: CliRunner, weight: str) -> None:
    assert _fails(cli, "tenants", "create", "acme", "--weight", weight) == [
        REFUSED.format(weight),
        HINT,
    ]
    _ok(cli, "tenants", "create", "beta", "--weight", "2")
    assert _fails(cli, "tenants", "set", "beta", "--weight", weight) == [
        REFUSED.format(weight),
        HINT,
    ]
    assert _weights(cli) == {"beta": 2}  # nothing written
