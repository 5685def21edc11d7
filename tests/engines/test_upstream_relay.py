"""The ``upstream`` engine relays an upstream's stream events with their keys and values as
sent, null-valued ones included (SDKs read ``finish_reason: null`` or a tool-call delta's
``content: null``), whether it asks the upstream for usage (``stream_usage``) or not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from _worker_fakes import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from zhisuan.engines.upstream import UpstreamEngine, load
from zhisuan.engines.worker import create_app

MESSAGES = [{"role": "user", "content": "the weather?"}]
_CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7}
EVENTS: list[dict[str, Any]] = [
    {
        **_CHUNK,
        "model": "up",
        "system_fingerprint": None,
        "service_tier": None,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": ""},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    },
    {
        **_CHUNK,
        "model": "up",
        "system_fingerprint": None,
        "service_tier": None,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Oslo"}'}}]
                },
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    },
    {
        **_CHUNK,
        "model": "up",
        "system_fingerprint": None,
        "service_tier": None,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}],
    },
]
"""What the fake upstream streams (as OpenAI does a tool call), before its usage chunk."""


async def _chat(request: Request) -> Response:
    body = await request.json()
    usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def events() -> AsyncIterator[bytes]:
        for event in EVENTS:
            sent = {**event, "usage": None} if usage else event  # as OpenAI, asked for usage
            yield f"data: {json.dumps(sent)}\n\n".encode()
        if usage:
            use = {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
            last = {**EVENTS[-1], "choices": [], "usage": use}
            yield f"data: {json.dumps(last)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def _models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "up", "object": "model"}]})


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    """A fake OpenAI server streaming :data:`EVENTS` (``/health`` for :func:`serve`)."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/models", _models),
            Route("/health", _models),
        ]
    )
    with serve(app) as url:
        yield url


def _proxy(upstream_url: str, stream_usage: bool) -> Any:
    options = {"base_url": f"{upstream_url}/v1", "upstream_model": "up"}
    options["stream_usage"] = stream_usage  # type: ignore[assignment]

    def loader() -> UpstreamEngine:
        return load(None, model_name="public", device="cpu", options=options)

    return serve(create_app(loader, model_name="public", engine_kind="upstream"))


def _as_relayed(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "model": "public"}


@pytest.mark.parametrize("stream_usage", [False, True])
def test_events_keep_the_upstreams_keys_and_values(upstream_url: str, stream_usage: bool) -> None:
    body = {"model": "public", "messages": MESSAGES, "stream": True}
    with _proxy(upstream_url, stream_usage) as url:
        lines = httpx.post(f"{url}/v1/chat/completions", json=body).iter_lines()
        data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert [json.loads(d) for d in data[:-1]] == [_as_relayed(e) for e in EVENTS]


@pytest.mark.parametrize("stream_usage", [False, True])
def test_chunks_carry_usage_null_when_the_client_asks(
    upstream_url: str, stream_usage: bool
) -> None:
    """OpenAI, asked ``stream_options.include_usage``, sends ``"usage": null`` on every chunk
    but the last, whether or not this deployment asks the upstream for usage."""
    body = {"model": "public", "messages": MESSAGES, "stream": True}
    body["stream_options"] = {"include_usage": True}
    with _proxy(upstream_url, stream_usage) as url:
        lines = httpx.post(f"{url}/v1/chat/completions", json=body).iter_lines()
        data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    *chunks, last = [json.loads(d) for d in data[:-1]]
    assert chunks == [{**_as_relayed(e), "usage": None} for e in EVENTS]
    assert last["choices"] == [] and last["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("stream_usage", [False, True])
def test_the_openai_client_reads_the_tool_call(upstream_url: str, stream_usage: bool) -> None:
    with (
        _proxy(upstream_url, stream_usage) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        stream = client.chat.completions.create(
            model="public",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    first = chunks[0].model_dump(exclude_unset=True)
    relayed = _as_relayed(EVENTS[0])
    assert first["choices"] == relayed["choices"]  # every key the upstream sent, None or not
    assert {k for k in relayed if k != "choices"} <= set(first)
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices]
    arguments = "".join(t[0].function.arguments or "" for t in calls if t and t[0].function)
    assert arguments == '{"city":"Oslo"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.total_tokens > 0
