"""``zhisuan deploy --replicas N``: 1 to :data:`zhisuan.store.MAX_REPLICAS`, the cap the admin
API has too; a count outside is one line and a hint, and changes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from zhisuan.cli.main import build
from zhisuan.errors import InvalidParameter
from zhisuan.store import MAX_REPLICAS, Store

app = build([])
UPSTREAM = ["deploy", "m", "--engine", "upstream", "--upstream-url", "http://10.0.0.5:8000/v1"]


def _deploy(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, [*UPSTREAM, *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr.strip().splitlines()


@pytest.mark.parametrize(
    ("count", "hint"),
    [
        (str(MAX_REPLICAS + 1), f"give --replicas from 1 to {MAX_REPLICAS}"),
        (str(10**20), f"give --replicas from 1 to {MAX_REPLICAS}"),  # once an OverflowError
        ("0", "zhisuan undeploy m"),
        ("-3", "zhisuan undeploy m"),
    ],
)
def test_a_count_outside_the_cap_is_one_line_and_a_hint(
    home_env: str, count: str, hint: str
) -> None:
    code, lines = _deploy("--replicas", count)
    assert code == 2
    assert lines[0] == f"error: --replicas must be from 1 to {MAX_REPLICAS}, not {count}"
    assert len(lines) == 2 and lines[1].startswith("hint: ") and hint in lines[1]
    with Store.open(home_env) as store:
        assert store.list_deployments() == []


def test_the_cap_itself_is_deployed_and_a_change_past_it_keeps_the_count(home_env: str) -> None:
    assert _deploy("--replicas", str(MAX_REPLICAS))[0] == 0
    code, lines = _deploy("--replicas", str(MAX_REPLICAS + 1))
    assert code == 2 and lines[0].startswith("error: --replicas must be from 1")
    with Store.open(home_env) as store:
        assert store.get_deployment("m").replicas == MAX_REPLICAS


@pytest.mark.parametrize("count", [0, MAX_REPLICAS + 1])
def test_the_store_refuses_what_the_cli_and_the_api_refuse(db_url: str, count: int) -> None:
    with Store.open(db_url) as store, pytest.raises(InvalidParameter) as err:
        store.deploy("m", engine="upstream", replicas=count, options={"base_url": "http://h/v1"})
    assert err.value.param == "replicas"
    assert err.value.message == f"replicas must be from 1 to {MAX_REPLICAS}, not {count}"


def test_the_admin_api_states_the_same_cap() -> None:
    from zhisuan.gateway.routers.admin import DeploymentIn

    # the store refuses past it, with the hint (tests/server/test_admin_hints.py)
    schema = DeploymentIn.model_json_schema()["properties"]["replicas"]
    assert schema["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS}


def test_the_help_states_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(build(["deploy"]), ["deploy", "--help"])
    assert result.exit_code == 0, result.output
    shown = f"--replicas <int> Worker processes to run, 1 to {MAX_REPLICAS} [default: 1]."
    assert shown in " ".join(result.output.split())


def test_the_built_command_states_the_cap_before_any_help_is_shown() -> None:
    import typer

    command = typer.main.get_command(build(["deploy"]))
    deploy = command.commands["deploy"]
    (option,) = [p for p in deploy.params if p.name == "replicas"]
    assert option.help == f"Worker processes to run, 1 to {MAX_REPLICAS} \\[default: 1]."


@pytest.mark.parametrize("argv", [["deploy"], ["ps"], ["logs"], []])
def test_building_the_cli_imports_no_sqlalchemy(argv: list[str]) -> None:
    code = (
        f"import sys; from zhisuan.cli.main import build; build({argv!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'"
        " or m.startswith('zhisuan.store')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # the cap in deploy's help comes from zhisuan.limits
