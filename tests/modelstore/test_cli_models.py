"""``zhisuan models …`` driven through Typer's CliRunner against a temporary home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_artifacts import LLAMA_PARAMS
from typer.testing import CliRunner

from zhisuan.cli.models import app


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("ZHISUAN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZHISUAN_DATABASE_URL", raising=False)
    return CliRunner()


def test_import_list_show_rm_json(cli: CliRunner, tiny_llama: Path, tmp_path: Path) -> None:
    res = cli.invoke(app, ["import", str(tiny_llama), "--name", "tiny", "--json"])
    assert res.exit_code == 0, res.output
    imported = json.loads(res.stdout)
    assert imported["param_count"] == LLAMA_PARAMS
    assert imported["path"] == str(tmp_path / "home" / "models" / "tiny")

    res = cli.invoke(app, ["list", "--json"])
    assert res.exit_code == 0
    assert [m["name"] for m in json.loads(res.stdout)] == ["tiny"]

    res = cli.invoke(app, ["show", "tiny", "--json"])
    assert json.loads(res.stdout)["files"][0]["name"] == "model.safetensors"

    res = cli.invoke(app, ["rm", "tiny", "--json"])
    assert json.loads(res.stdout) == {"removed": "tiny", "files_deleted": True}
    assert json.loads(cli.invoke(app, ["list", "--json"]).stdout) == []


def test_tables(cli: CliRunner, tiny_gguf: Path) -> None:
    res = cli.invoke(app, ["import", str(tiny_gguf), "--licence", "commercial"])
    assert res.exit_code == 0, res.output
    assert "imported tiny-llama-f16" in res.stdout
    res = cli.invoke(app, ["list"])
    assert "tiny-llama-f16" in res.stdout and "5.71K" in res.stdout
    res = cli.invoke(app, ["show", "tiny-llama-f16"])
    assert "commercial" in res.stdout and "sha256" in res.stdout
    res = cli.invoke(app, ["rm", "tiny-llama-f16"])
    assert "removed tiny-llama-f16" in res.stdout


def test_empty_list(cli: CliRunner) -> None:
    res = cli.invoke(app, ["list"])
    assert res.exit_code == 0 and "no models yet" in res.stdout


@pytest.mark.parametrize(
    ("fixture", "reason", "hint"),
    [
        ("config_less", "not an HF model directory: config.json missing", ".gguf"),
        ("pickle_only", "holds only pickle weights", "--allow-pickle"),
        ("truncated_llama", "model.safetensors is truncated: expected", "download"),
    ],
)
def test_refusals_are_one_line_with_a_hint(
    cli: CliRunner, request: pytest.FixtureRequest, fixture: str, reason: str, hint: str
) -> None:
    res = cli.invoke(app, ["import", str(request.getfixturevalue(fixture))])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and reason in lines[0]
    assert lines[1].startswith("hint: ") and hint in lines[1]
    assert "Traceback" not in res.output
    assert res.stdout == ""


def test_unknown_model_suggests(cli: CliRunner, tiny_llama: Path) -> None:
    cli.invoke(app, ["import", str(tiny_llama), "--name", "tiny-llama"])
    res = cli.invoke(app, ["show", "tiny-lama"])
    assert res.exit_code == 2
    assert "error: model 'tiny-lama' not found" in res.stderr
    assert "hint: did you mean: tiny-llama?" in res.stderr


def test_bad_licence(cli: CliRunner, tiny_llama: Path) -> None:
    res = cli.invoke(app, ["import", str(tiny_llama), "--licence", "gpl"])
    assert res.exit_code == 2 and "unknown licence tier 'gpl'" in res.stderr


def test_cli_module_imports_no_heavy_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, zhisuan.cli.models; "
        "print(sorted(m for m in ('torch', 'gguf', 'sqlalchemy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
