"""A flag that is not a JSON boolean, and ``stream_options`` without a stream, are answered
400 naming the field, as OpenAI answers them, by a real ``zhisuan serve --demo``: through the
gateway's hot path (a whole body, and a chunked one) and by a worker called directly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.server._serve import Server

pytestmark = pytest.mark.server

CHAT = "zhisuan-tiny-chat"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]
WITHOUT_STREAM = (
    "Invalid value for 'stream_options': The 'stream_options' parameter is only allowed when "
    "'stream' is enabled."
)
GOT = {"yes": "a string", "true": "a string", 1: "an integer", "1": "a string"}
CASES = [
    pytest.param({"stream": "yes"}, "stream", id="stream-yes"),
    pytest.param({"stream": "true"}, "stream", id="stream-true-string"),
    pytest.param({"stream": 1}, "stream", id="stream-1"),
    pytest.param({"stream": "1"}, "stream", id="stream-1-string"),
    pytest.param({"ignore_eos": "true"}, "ignore_eos", id="ignore_eos"),
    pytest.param(
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        "stream_options.include_usage",
        id="include_usage",
    ),
    pytest.param({"stream_options": {"include_usage": True}}, "stream_options", id="no-stream"),
    pytest.param(
        {"stream": False, "stream_options": {"include_usage": False}},
        "stream_options",
        id="stream-false",
    ),
]


def _worker(server: Server) -> str:
    rows = httpx.get(f"{server.url}/admin/replicas", timeout=10).json()
    return str(next(r["endpoint"] for r in rows if r["model"] == CHAT))


def _post(url: str, fields: dict[str, Any], chunked: bool = False) -> httpx.Response:
    body = json.dumps({"model": CHAT, "messages": HELLO, "max_tokens": 2, **fields}).encode()
    return httpx.post(
        f"{url}/v1/chat/completions",
        content=iter([body[:10], body[10:]]) if chunked else body,
        headers={"content-type": "application/json"},
        timeout=30,
    )


def _assert_refused(resp: httpx.Response, fields: dict[str, Any], param: str) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    if param == "stream_options":
        assert error["message"] == WITHOUT_STREAM
    else:
        sent = fields["stream_options"]["include_usage"] if "." in param else fields[param]
        assert error["code"] == "invalid_type"
        assert error["message"] == (
            f"Invalid type for '{param}': expected a boolean, but got {GOT[sent]} instead."
        )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("fields", "param"), CASES)
def test_the_gateway_refuses_it_naming_the_field(
    server: Server, fields: dict[str, Any], param: str, chunked: bool
) -> None:
    _assert_refused(_post(server.url, fields, chunked), fields, param)


@pytest.mark.parametrize(("fields", "param"), CASES)
def test_a_worker_refuses_it_naming_the_field(
    server: Server, fields: dict[str, Any], param: str
) -> None:
    _assert_refused(_post(_worker(server), fields), fields, param)


def test_the_openai_client_gets_a_bad_request_for_stream_options_without_a_stream(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(
            model=CHAT, prompt="Once", max_tokens=2, stream_options={"include_usage": True}
        )
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "stream_options"
    assert body["message"] == WITHOUT_STREAM
    # null options, as a client that always sends the field does, are no stream options
    resp = client.chat.completions.create(
        model=CHAT, messages=HELLO, max_tokens=2, extra_body={"stream_options": None}
    )
    assert resp.choices[0].message.content is not None
