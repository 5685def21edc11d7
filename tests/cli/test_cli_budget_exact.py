"""``zhisuan tenants|keys create|set --budget``: the amount is judged as the decimal typed, not
as the float it rounds to, so places a float would lose are refused like any others (one line
and a hint, the amount as typed, nothing stored); a huge one is too large, not infinite."""

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


@pytest.fixture
def prefix(home_env: str) -> str:
    """``acme`` with a budget of 5, and its key with one of 2: the key's prefix."""
    assert _run("tenants", "create", "acme", "--budget", "5")[0] == 0
    assert _run("keys", "create", "--tenant", "acme", "--budget", "2")[0] == 0
    with Store.open(home_env) as store:
        return store.list_keys("acme")[0].prefix


def _unchanged(db_url: str) -> None:
    with Store.open(db_url) as store:
        assert [(t.name, t.budget) for t in store.list_tenants()] == [("acme", 5.0)]
        assert [k.budget for k in store.list_keys()] == [2.0]


WAYS = [
    ["tenants", "create", "beta", "--budget"],
    ["tenants", "set", "acme", "--budget"],
    ["keys", "create", "--tenant", "acme", "--budget"],
    ["keys", "set", "{prefix}", "--budget"],
]


@pytest.mark.parametrize(
    ("typed", "rounded", "hint"),
    [
        ("1.00000000000000001", "1", "1 or 1.000001"),
        ("0.1000000000000000055511151231257827", "0.1", "0.1 or 0.100001"),
    ],
)
@pytest.mark.parametrize("way", WAYS)
def test_places_a_float_would_lose_are_refused(
    home_env: str, prefix: str, way: list[str], typed: str, rounded: str, hint: str
) -> None:
    code, lines = _run(*(arg.format(prefix=prefix) for arg in way), typed)
    assert code == 2
    assert lines == [
        f"error: budget {typed} has more decimal places than a budget keeps (6, in steps of "
        f"0.000001): it would be rounded to {rounded}",
        f"hint: give at most 6 decimal places, e.g. {hint}",
    ]
    _unchanged(home_env)


@pytest.mark.parametrize(
    ("typed", "error", "hint"),
    [
        ("1e400", "budget 1e+400 is too large (at most 1e+12)", "leave a limit out for no limit"),
        ("1e99999999999999999999", "budget must be a finite number, got inf",
         "give a positive number, or leave the limit out for no limit"),
        ("0.0000004999999999999999999", "budget 0.0000004999999999999999999 is under half of "
         "0.000001, the smallest step of a budget (kept to 6 decimal places): it would be "
         "stored as 0, which allows no spending",
         "give 0.000001 or more, or leave the budget out for no limit"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("way", WAYS)
def test_an_amount_out_of_range_is_one_line(
    home_env: str, prefix: str, way: list[str], typed: str, error: str, hint: str
) -> None:
    code, lines = _run(*(arg.format(prefix=prefix) for arg in way), typed)
    assert code == 2
    assert lines == [f"error: {error}", f"hint: {hint}"]
    _unchanged(home_env)


def test_a_malformed_amount_is_a_usage_error(home_env: str, prefix: str) -> None:
    result = CliRunner().invoke(app, ["tenants", "set", "acme", "--budget", "1,5"])
    assert result.exit_code == 2
    assert "Invalid value for '--budget'" in result.output
    assert "Traceback" not in result.output
    _unchanged(home_env)


def test_an_amount_of_whole_steps_is_stored_as_typed(home_env: str, prefix: str) -> None:
    assert _run("tenants", "set", "acme", "--budget", "123456.1234560000")[0] == 0
    assert _run("keys", "set", prefix, "--budget", "0.000001")[0] == 0
    with Store.open(home_env) as store:
        assert store.get_tenant("acme").budget == 123456.123456
        assert [k.budget for k in store.list_keys()] == [0.000001]
