"""``zhisuan serve`` and ``deploy`` refuse a malformed flag with one line, before starting or
storing anything; the commands' help texts show their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from zhisuan.cli.main import build

app = build([])


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["serve", "--auth", "maybe"], "--auth must be on or off, not 'maybe'"),
        (["serve", "--metrics", "all"], "--metrics must be open or admin, not 'all'"),
        (["serve", "--cpu-pinning", "some"], "--cpu-pinning must be auto or off, not 'some'"),
        (["deploy", "m", "--queue", "lifo"], "--queue must be fair or fifo, not 'lifo'"),
    ],
)
def test_a_bad_flag_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], reason: str
) -> None:
    monkeypatch.setenv("ZHISUAN_HOME", str(tmp_path))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[0] == f"error: {reason}"
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing stored


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
