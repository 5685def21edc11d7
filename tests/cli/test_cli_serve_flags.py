"""``zhisuan serve`` refuses a malformed flag with one line and a hint, before starting anything;
the commands' help texts show their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from zhisuan.cli.main import build

app = build([])


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        ("--auth", "maybe", "--auth must be on or off, not 'maybe'"),
        ("--metrics", "all", "--metrics must be open or admin, not 'all'"),
        ("--cpu-pinning", "some", "--cpu-pinning must be auto or off, not 'some'"),
    ],
)
def test_a_bad_flag_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, value: str, reason: str
) -> None:
    monkeypatch.setenv("ZHISUAN_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", flag, value])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[0] == f"error: {reason}"
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["serve"], "[default: on unless listening on loopback]"),
        (["deploy"], "[default: by model format]"),
        (["tenants", "create"], "[default: unlimited]"),
        (["keys", "create"], "[default: never]"),
        (["models", "import"], "[default: detected from the model]"),
        (["usage"], "[default: all]"),
    ],
)
def test_help_shows_the_defaults(
    monkeypatch: pytest.MonkeyPatch, command: list[str], shown: str
) -> None:
    """Help texts name their defaults in brackets, which Rich must not take for markup."""
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(build(command), [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert shown in " ".join(result.output.split())
