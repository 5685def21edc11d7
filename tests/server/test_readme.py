"""The README's Python examples run against a real server (documentation never lies)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.server._serve import Server

pytestmark = pytest.mark.server

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert python_blocks()


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(
    server: Server, index: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code = python_blocks()[index].replace("http://127.0.0.1:8000", server.url)
    exec(compile(code, f"README.md[python {index}]", "exec"), {})
    assert capsys.readouterr().out.strip()
