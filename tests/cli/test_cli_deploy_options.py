"""``zhisuan deploy --option NAME=VALUE``: engine options without a flag of their own, each
name checked against what the engine and the gateway read, nothing stored on an error."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from zhisuan.cli.main import build
from zhisuan.store import Store

app = build([])
UPSTREAM = ["deploy", "m", "--engine", "upstream", "--upstream-url", "http://10.0.0.5:8000/v1"]


def test_options_are_read_as_json_where_they_parse(home_env: str) -> None:
    args = [*UPSTREAM, "--option", "timeout=5", "--option", "check=false"]
    result = CliRunner().invoke(app, [*args, "--option", "task=embedding", "--price-in", "2"])
    assert result.exit_code == 0, result.output
    with Store.open(home_env) as store:
        options = store.get_deployment("m").options
    assert options == {
        "timeout": 5,
        "check": False,
        "task": "embedding",  # not JSON: the text itself
        "base_url": "http://10.0.0.5:8000/v1",
        "price_input_per_mtok": 2.0,
    }


@pytest.mark.parametrize(
    ("option", "error", "hint"),
    [
        (
            "timeuot=5",
            "no upstream deployment option is called 'timeuot'; did you mean timeout?",
            "upstream options: api_key_env",
        ),
        ("max_prefill_tokens=64", "no upstream deployment option is called", "upstream options:"),
        ("max_batch=4", "--option max_batch has a flag of its own", "use --max-batch"),
        ("timeout", "--option 'timeout' is not NAME=VALUE", "e.g. --option"),
        ("context_length=0", "options.context_length must be an integer >= 1, not 0", ""),
    ],
)
def test_a_bad_option_is_one_line_and_stores_nothing(
    home_env: str, option: str, error: str, hint: str
) -> None:
    result = CliRunner().invoke(app, [*UPSTREAM, "--option", option])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {error}")
    assert hint in (lines[1] if len(lines) > 1 else "")
    with Store.open(home_env) as store:
        assert store.list_deployments() == []
