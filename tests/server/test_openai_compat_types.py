"""A field of the wrong JSON type is answered 400 in OpenAI's words by a real ``zhisuan serve
--demo``: ``{"message": "Invalid type for 'stream': expected a boolean, but got a string
instead.", "type": "invalid_request_error", "param": "stream", "code": "invalid_type"}``,
the same body from the gateway's hot path (a whole body, and a chunked one) and from a worker
called directly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.server._serve import Server

pytestmark = pytest.mark.server

CHAT = "zhisuan-tiny-chat"
EMBED = "minilm-embed"
HELLO = [{"role": "user", "content": "Hello!"}]
CASES = [
    pytest.param("chat/completions", {"stream": "yes"}, "stream", "a boolean", "a string",
                 id="stream"),
    pytest.param("chat/completions", {"temperature": "0.5"}, "temperature", "a decimal",
                 "a string", id="temperature"),
    pytest.param("chat/completions", {"seed": 1.5}, "seed", "an integer", "a decimal number",
                 id="seed"),
    pytest.param("chat/completions", {"messages": "Hello!"}, "messages",
                 "an array of objects", "a string", id="messages"),
    pytest.param("chat/completions", {"messages": ["Hello!"]}, "messages[0]", "an object",
                 "a string", id="message"),
    pytest.param("chat/completions", {"messages": [{"role": "user", "content": 7}]},
                 "messages[0].content", "one of a string or array of objects", "an integer",
                 id="content"),
    pytest.param("chat/completions", {"stop": ["a", 5]}, "stop[1]", "a string", "an integer",
                 id="stop-item"),
    pytest.param("chat/completions", {"stream": True, "stream_options": {"include_usage": 1}},
                 "stream_options.include_usage", "a boolean", "an integer", id="include_usage"),
    pytest.param("completions", {"prompt": 5}, "prompt", "one of a string or array of strings",
                 "an integer", id="prompt"),
    pytest.param("completions", {"prompt": "Once", "echo": "no"}, "echo", "a boolean",
                 "a string", id="echo"),
    pytest.param("embeddings", {"input": "x", "encoding_format": 1}, "encoding_format",
                 "one of 'float' or 'base64'", "an integer", id="encoding_format"),
]  # fmt: skip


def _body(path: str, fields: dict[str, Any]) -> bytes:
    if path == "embeddings":
        return json.dumps({"model": EMBED, **fields}).encode()
    base: dict[str, Any] = {"model": CHAT, "max_tokens": 2}
    base.update({"messages": HELLO} if path == "chat/completions" else {})
    return json.dumps({**base, **fields}).encode()


def _post(url: str, path: str, body: bytes, chunked: bool = False) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/{path}",
        content=iter([body[:10], body[10:]]) if chunked else body,
        headers={"content-type": "application/json"},
        timeout=30,
    )


def _worker(server: Server, model: str) -> str:
    rows = httpx.get(f"{server.url}/admin/replicas", timeout=10).json()
    return str(next(r["endpoint"] for r in rows if r["model"] == model))


@pytest.mark.parametrize(("path", "fields", "param", "expected", "got"), CASES)
def test_a_wrong_type_gets_openais_body_from_the_gateway_and_a_worker(
    server: Server, path: str, fields: dict[str, Any], param: str, expected: str, got: str
) -> None:
    want = {
        "error": {
            "message": f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
            "type": "invalid_request_error",
            "param": param,
            "code": "invalid_type",
        }
    }
    body = _body(path, fields)
    worker = _worker(server, EMBED if path == "embeddings" else CHAT)
    for resp in (
        _post(server.url, path, body),
        _post(server.url, path, body, chunked=True),
        _post(worker, path, body),
    ):
        assert resp.status_code == 400, resp.text
        assert resp.json() == want


def test_the_openai_client_gets_a_bad_request_with_code_invalid_type(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=CHAT, messages=HELLO, max_tokens=2, extra_body={"stream": "true"}
        )
    assert info.value.code == "invalid_type"
    assert info.value.param == "stream"
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"] == (
        "Invalid type for 'stream': expected a boolean, but got a string instead."
    )
