"""The ``upstream`` engine sends the upstream the client's JSON as it came: a ``null`` the
client sent stays a ``null``, a field it did not send stays absent; only ``model``, and on a
stream ``stream`` and ``stream_options``, are the engine's to set."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from _worker_fakes import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from zhisuan.engines.upstream import UpstreamEngine, load
from zhisuan.engines.worker import create_app

MESSAGES = [{"role": "user", "content": "hi"}]
NULLS = {"tool_choice": None, "stop": None, "seed": None, "user": None, "temperature": None}
"""Fields a client may send as explicit nulls."""

RECEIVED: list[dict[str, Any]] = []
"""The bodies the fake upstream was sent, in order."""


async def _chat(request: Request) -> Response:
    body = await request.json()
    RECEIVED.append(body)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up"}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "ok"}
        use = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        answer = {**chunk, "object": "chat.completion", "usage": use}
        answer["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
        return JSONResponse(answer)

    async def events() -> AsyncIterator[bytes]:
        delta = {"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}
        yield f"data: {json.dumps({**chunk, 'choices': [delta]})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def _models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "up", "object": "model"}]})


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    """A fake OpenAI server that records what it is sent (``/health`` for :func:`serve`)."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/models", _models),
            Route("/health", _models),
        ]
    )
    with serve(app) as url:
        yield url


def _sent_upstream(upstream_url: str, stream_usage: bool, body: dict[str, Any]) -> dict[str, Any]:
    """What the upstream receives when a client sends ``body`` through a proxy worker."""
    options = {"base_url": f"{upstream_url}/v1", "upstream_model": "up"}
    options["stream_usage"] = stream_usage  # type: ignore[assignment]

    def loader() -> UpstreamEngine:
        return load(None, model_name="public", device="cpu", options=options)

    RECEIVED.clear()
    with serve(create_app(loader, model_name="public", engine_kind="upstream")) as url:
        resp = httpx.post(f"{url}/v1/chat/completions", json=body)
        resp.read()
    assert resp.status_code == 200, resp.text
    assert len(RECEIVED) == 1
    return RECEIVED[0]


@pytest.mark.parametrize("stream_usage", [False, True])
def test_a_whole_answer_forwards_the_clients_nulls(upstream_url: str, stream_usage: bool) -> None:
    body = {"model": "public", "messages": MESSAGES, "max_tokens": 3, **NULLS}
    assert _sent_upstream(upstream_url, stream_usage, body) == {**body, "model": "up"}
    nulled = {**body, "stream": None, "stream_options": None}
    sent = _sent_upstream(upstream_url, stream_usage, nulled)
    if stream_usage:
        assert sent == {**nulled, "model": "up"}
    else:  # an upstream that rejects the field is never sent it
        assert sent == {**body, "stream": None, "model": "up"}


@pytest.mark.parametrize("stream_usage", [False, True])
def test_a_stream_forwards_the_clients_nulls(upstream_url: str, stream_usage: bool) -> None:
    body = {"model": "public", "messages": MESSAGES, "max_tokens": 3, "stream": True, **NULLS}
    sent = _sent_upstream(upstream_url, stream_usage, body)
    if stream_usage:
        assert sent == {**body, "model": "up", "stream_options": {"include_usage": True}}
    else:
        assert sent == {**body, "model": "up"}


def test_usage_is_asked_beside_the_clients_stream_options(upstream_url: str) -> None:
    options = {"include_usage": False, "continuous_usage_stats": False}
    body = {"model": "public", "messages": MESSAGES, "stream": True, "stream_options": options}
    sent = _sent_upstream(upstream_url, True, {**body, "max_tokens": 3})
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": False}
    assert "stream_options" not in _sent_upstream(upstream_url, False, {**body, "max_tokens": 3})
