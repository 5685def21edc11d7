"""``zhisuan tenants|keys create|set --budget``: an amount the 6-decimal budget column would
keep as 0 (allowing no spending), or would round, is one line and a hint, and stores
nothing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from zhisuan.cli.main import build
from zhisuan.store import Store

app = build([])


def _run(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr.strip().splitlines()


@pytest.mark.parametrize(
    "args",
    [
        ["tenants", "create", "beta", "--budget", "0.0000004"],
        ["tenants", "set", "acme", "--budget", "0.0000004"],
        ["keys", "create", "--tenant", "acme", "--budget", "0.0000004"],
    ],
)
def test_a_budget_that_would_be_stored_as_zero_is_refused(home_env: str, args: list[str]) -> None:
    assert _run("tenants", "create", "acme", "--budget", "5")[0] == 0
    code, lines = _run(*args)
    assert code == 2
    assert lines == [
        "error: budget 0.0000004 is under half of 0.000001, the smallest step of a budget (kept "
        "to 6 decimal places): it would be stored as 0, which allows no spending",
        "hint: give 0.000001 or more, or leave the budget out for no limit",
    ]
    with Store.open(home_env) as store:
        assert [(t.name, t.budget) for t in store.list_tenants()] == [("acme", 5.0)]
        assert store.list_keys() == []


@pytest.mark.parametrize(
    "args",
    [
        ["tenants", "create", "beta", "--budget", "1.0000004"],
        ["tenants", "set", "acme", "--budget", "1.0000004"],
        ["keys", "create", "--tenant", "acme", "--budget", "1.0000004"],
    ],
)
def test_a_budget_with_more_places_than_kept_is_refused(home_env: str, args: list[str]) -> None:
    assert _run("tenants", "create", "acme", "--budget", "5")[0] == 0
    code, lines = _run(*args)
    assert code == 2
    assert lines == [
        "error: budget 1.0000004 has more decimal places than a budget keeps (6, in steps of "
        "0.000001): it would be rounded to 1",
        "hint: give at most 6 decimal places, e.g. 1 or 1.000001",
    ]
    with Store.open(home_env) as store:
        assert [(t.name, t.budget) for t in store.list_tenants()] == [("acme", 5.0)]
        assert store.list_keys() == []


def test_the_smallest_step_is_kept(home_env: str) -> None:
    assert _run("tenants", "create", "acme", "--budget", "0.000001")[0] == 0
    with Store.open(home_env) as store:
        assert store.get_tenant("acme").budget == 0.000001
