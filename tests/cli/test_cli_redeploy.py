"""``zhisuan deploy`` of a deployed model keeps what the command does not give; engines that
cannot run a model, bad upstream addresses and names, and non-boolean flags are refused with
one line, storing nothing; ``undeploy`` of an unknown name says what is deployed."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner, Result

from zhisuan import demo
from zhisuan.cli.main import build
from zhisuan.store import Store

app = build([])
CHAT = "zhisuan-tiny-chat"
GGUF = "g"
UP = ["--engine", "upstream", "--upstream-url", "http://10.0.0.5:8000/v1"]


def _run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _ok(*args: str) -> Result:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _refused(*args: str) -> list[str]:
    """The command fails with exit 2 and one ``error:`` line (a ``hint:`` may follow)."""
    result = _run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and len(lines) <= 2, lines
    return lines


def _stored(url: str, name: str) -> tuple[str, str, int, dict[str, Any]]:
    with Store.open(url) as store:
        d = store.get_deployment(name)
    return d.engine, d.device, d.replicas, d.options


@pytest.fixture
def models(home_env: str) -> str:
    """The demo chat model (HF) and its GGUF export (as ``g``), imported linked."""
    _ok("models", "import", str(demo.tiny_chat_dir()), "--link")
    _ok("models", "import", str(demo.tiny_chat_gguf()), "--name", GGUF, "--link")
    return home_env


def test_a_new_price_alone_keeps_every_other_setting(models: str) -> None:
    _ok(
        "deploy", CHAT, "--replicas", "2", "--max-batch", "4", "--price-in", "1",
        "--price-out", "2", "--queue", "fifo", "--option", "max_prefill_tokens=512",
    )  # fmt: skip
    _ok("deploy", CHAT, "--price-in", "3")
    assert _stored(models, CHAT) == (
        "transformers",
        "cpu",
        2,
        {
            "max_batch": 4,
            "price_input_per_mtok": 3.0,
            "price_output_per_mtok": 2.0,
            "queue": "fifo",
            "max_prefill_tokens": 512,
        },
    )


def test_clear_and_null_remove_a_kept_option(models: str) -> None:
    _ok("deploy", CHAT, "--price-in", "1", "--price-out", "2", "--queue", "fifo",
        "--option", "max_prefill_tokens=512", "--option", "embed_group=false")  # fmt: skip
    _ok("deploy", CHAT, "--clear", "price-out", "--clear", "embed_group",
        "--option", "max_prefill_tokens=null", "--queue", "fair")  # fmt: skip
    assert _stored(models, CHAT)[3] == {"price_input_per_mtok": 1.0}
    lines = _refused("deploy", CHAT, "--clear", "price-ouf")
    assert lines[0] == "error: --clear 'price-ouf': no deployment option or flag is called that"
    assert _stored(models, CHAT)[3] == {"price_input_per_mtok": 1.0}


def test_an_upstream_keeps_its_engine_and_address(home_env: str) -> None:
    _ok("deploy", "up", *UP, "--option", "timeout=5", "--replicas", "2")
    _ok("deploy", "up", "--price-in", "1")
    assert _stored(home_env, "up") == (
        "upstream",
        "cpu",
        2,
        {"base_url": "http://10.0.0.5:8000/v1", "timeout": 5, "price_input_per_mtok": 1.0},
    )


def test_an_option_the_new_engine_does_not_read_must_be_cleared(home_env: str) -> None:
    _ok("models", "import", str(demo.tiny_chat_gguf()), "--name", GGUF, "--link")
    _ok("deploy", GGUF, "--option", "n_ctx=256", "--price-in", "1")
    lines = _refused("deploy", GGUF, *UP)
    assert lines == [
        "error: the deployment keeps option 'n_ctx', which the upstream engine does not read",
        "hint: remove it with --clear n_ctx",
    ]
    assert _stored(home_env, GGUF)[0] == "llamacpp"
    _ok("deploy", GGUF, *UP, "--clear", "n_ctx")
    assert _stored(home_env, GGUF)[3] == {
        "base_url": "http://10.0.0.5:8000/v1",
        "price_input_per_mtok": 1.0,
    }


def test_the_engine_follows_the_format_and_a_mismatch_is_refused(models: str) -> None:
    _ok("deploy", GGUF)
    assert _stored(models, GGUF)[0] == "llamacpp"
    lines = _refused("deploy", GGUF, "--engine", "transformers")
    assert lines[0] == ("error: model 'g' is a GGUF file, which the transformers engine cannot run")
    assert lines[1].startswith("hint: deploy it on llamacpp")
    lines = _refused("deploy", CHAT, "--engine", "llamacpp")
    assert lines[0] == (
        f"error: model '{CHAT}' is an HF-format directory, which the llamacpp engine cannot run"
    )
    with Store.open(models) as store:
        assert [d.model_name for d in store.list_deployments()] == [GGUF]
        assert store.get_deployment(GGUF).engine == "llamacpp"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["deploy", "up", "--engine", "upstream", "--upstream-url", "ftp://h/v1"],
            "error: an upstream deployment needs a base_url, the http(s) address of an "
            "OpenAI-compatible server: not 'ftp://h/v1'",
        ),
        (
            ["deploy", "up", "--engine", "upstream", "--upstream-url", "http:///v1"],
            "error: an upstream deployment needs a base_url",
        ),
        (["deploy", "", *UP], "error: invalid model name ''"),
        (["deploy", "a" * 80, *UP], f"error: invalid model name '{'a' * 80}'"),
        (["deploy", "a/b", *UP], "error: invalid model name 'a/b'"),
        (
            ["deploy", "up", *UP, "--option", "check=False"],
            "error: options.check must be true or false, not 'False'",
        ),
        (
            ["deploy", "up", *UP, "--max-batch", "2"],
            "error: --max-batch does not apply to the upstream engine",
        ),
    ],
)
def test_what_cannot_run_is_refused_and_not_stored(
    home_env: str, args: list[str], error: str
) -> None:
    assert _refused(*args)[0].startswith(error)
    with Store.open(home_env) as store:
        assert store.list_deployments() == []


def test_a_boolean_option_must_be_a_boolean(models: str) -> None:
    lines = _refused("deploy", CHAT, "--option", "embed_group=False")
    assert lines[0] == "error: options.embed_group must be true or false, not 'False'"
    _ok("deploy", CHAT, "--option", "embed_group=false")
    assert _stored(models, CHAT)[3] == {"embed_group": False}


def test_undeploy_of_an_unknown_name_hints_at_what_is_deployed(home_env: str) -> None:
    assert _refused("undeploy", "nope") == [
        "error: no deployment of 'nope'",
        "hint: nothing is deployed",
    ]
    _ok("deploy", "up", *UP)
    assert _refused("undeploy", "zzz") == [
        "error: no deployment of 'zzz'",
        "hint: deployed: up (`zhisuan ps` shows them)",
    ]
