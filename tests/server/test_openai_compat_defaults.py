"""Nulls and defaults as OpenAI takes them, by a real ``zhisuan serve --demo``, through the
gateway and by a worker called directly: ``stream_options.include_usage: null`` with a stream
means no usage chunk (not a 400), and a text completion (``/v1/completions``) without
``max_tokens``, or with ``null``, gets 16 tokens, while a chat completion without one may use
the rest of the context, as before."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.server._serve import Server

pytestmark = pytest.mark.server

CHAT = "zhisuan-tiny-chat"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]


def _urls(server: Server) -> list[str]:
    """The gateway's and the chat model's worker's."""
    rows = httpx.get(f"{server.url}/admin/replicas", timeout=10).json()
    return [server.url, str(next(r["endpoint"] for r in rows if r["model"] == CHAT))]


def test_a_null_include_usage_streams_without_a_usage_chunk(
    server: Server, client: openai.OpenAI
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=CHAT,
            messages=HELLO,
            max_tokens=4,
            stream=True,
            extra_body={"stream_options": {"include_usage": None}},
        )
    )
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    body = {"model": CHAT, "prompt": "Once", "max_tokens": 2, "stream": True}
    body["stream_options"] = {"include_usage": None}
    for url in _urls(server):
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as resp:
            text = "".join(resp.iter_text())
        assert resp.status_code == 200, text
        assert text.rstrip().endswith("data: [DONE]")
        assert '"usage"' not in text


@pytest.mark.parametrize("fields", [{}, {"max_tokens": None}], ids=["absent", "null"])
def test_a_text_completion_without_max_tokens_gets_16_tokens(
    server: Server, fields: dict[str, Any]
) -> None:
    # ``ignore_eos`` generates up to the budget, so the budget is what the usage shows
    body = {"model": CHAT, "prompt": "Once upon a time", "ignore_eos": True, **fields}
    for url in _urls(server):
        resp = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["usage"]["completion_tokens"] == 16
        assert answer["choices"][0]["finish_reason"] == "length"


def test_the_openai_clients_null_max_tokens_gets_16_tokens(client: openai.OpenAI) -> None:
    resp = client.completions.create(
        model=CHAT, prompt="Once upon a time", max_tokens=None, extra_body={"ignore_eos": True}
    )
    assert resp.usage is not None and resp.usage.completion_tokens == 16


@pytest.mark.parametrize("fields", [{}, {"max_tokens": None}], ids=["absent", "null"])
def test_a_chat_completion_without_max_tokens_may_use_the_rest_of_the_context(
    server: Server, fields: dict[str, Any]
) -> None:
    body = {"model": CHAT, "messages": HELLO, "ignore_eos": True, **fields}
    resp = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]
    assert usage["total_tokens"] == 512  # the demo model's context, all of it
