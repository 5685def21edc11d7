"""``zhisuan serve`` refuses a malformed flag with one line and a hint, before starting anything."""

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
