"""The ``upstream`` engine reads an upstream's stream as the SSE specification says: an
event ends at a blank line, its ``data:`` lines join with a newline, lines end at CRLF, LF
or CR only, and comments, ``event:``, ``id:`` and ``retry:`` lines leave the data alone."""

from __future__ import annotations

import asyncio
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

from zhisuan.engines._upstream_sse import sse_data
from zhisuan.engines.upstream import UpstreamEngine, load
from zhisuan.engines.worker import create_app


def _read(stream: bytes | list[bytes], size: int = 1) -> list[str]:
    """The data of each event in ``stream``, fed to the reader ``size`` bytes at a time
    (or chunk by chunk, given a list)."""
    if isinstance(stream, bytes):
        stream = [stream[start : start + size] for start in range(0, len(stream), size)]

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in stream:
            yield chunk

    async def read() -> list[str]:
        return [data async for data in sse_data(chunks())]

    return asyncio.run(read())


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1 << 20])
def test_the_reader_follows_the_spec_however_the_stream_is_cut(size: int) -> None:
    stream = (
        "\ufeff: a comment\n"
        "event: message\nid: 7\nretry: 1000\ndata: one\n\n"  # fields beside data
        'data: {"a":\ndata: 1}\n\n'  # data lines join with a newline
        "data:tight\ndata:  two spaces\ndata\n\n"  # one space after the colon is dropped
        "data: crlf\r\ndata: cr\r\rdata: lf\n\n"  # every line end
        "data: a\u2028b\x85c\x0bd\x1ce\n\n"  # not line ends in SSE
        "event: ping\nid: 8\n\n"  # no data: not dispatched
        "data: x\n: comment inside\nunknown: y\ndata: z\n\n"
        "data: [DONE]\n\n"
        "data: cut off"  # the stream ends inside an event: not dispatched
    ).encode()
    assert _read(stream, size) == [
        "one",
        '{"a":\n1}',
        "tight\n two spaces\n",
        "crlf\ncr",
        "lf",
        "a\u2028b\x85c\x0bd\x1ce",
        "x\nz",
        "[DONE]",
    ]


def test_a_crlf_cut_between_chunks_is_one_line_end() -> None:
    chunks = [b"data: a\r", b"\n", b"\n", b"data: b\r", b"", b"\n\r", b"\n", b"data: c\n\n"]
    assert _read(chunks) == ["a", "b", "c"]
    assert _read([b"data: a\r", b"\n", b"data: b\r", b"\r"]) == ["a\nb"]


def test_a_bad_utf8_byte_is_replaced() -> None:
    assert _read(b"data: a\xffb\n\n", 1) == ["a\ufffdb"]


CONTENT = ["Hello", " line\u2028sep", " next\x85line", " \u00e9t\u00e9 \U0001f600"]
"""Content pieces, some with characters ``str.splitlines`` would take for line ends."""
_CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "up"}


def _upstream_stream() -> bytes:
    """A chat stream as a server may write it within the spec: CRLF line ends, comments,
    named events with ids, raw Unicode, and every other JSON body spread over several
    data lines."""
    out = ": keep-alive\r\nretry: 3000\r\n\r\n"
    for i, piece in enumerate(CONTENT):
        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
        indent = None if i % 2 else 1  # 1: one data line per JSON line
        text = json.dumps({**_CHUNK, "choices": [choice]}, ensure_ascii=False, indent=indent)
        data = "".join(f"data: {line}\r\n" for line in text.split("\n"))
        out += f"event: completion\r\nid: {i}\r\n{data}\r\n: tick\r\n\r\n"
    use = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    out += f"data: {json.dumps({**_CHUNK, 'choices': [], 'usage': use})}\r\n\r\n"
    return (out + "data: [DONE]\r\n\r\n").encode()


async def _chat(request: Request) -> Response:
    stream = _upstream_stream()

    async def events() -> AsyncIterator[bytes]:
        for start in range(0, len(stream), 5):  # cut anywhere, CR apart from LF included
            yield stream[start : start + 5]

    return StreamingResponse(events(), media_type="text/event-stream")


async def _models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "up", "object": "model"}]})


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    """A worker relaying a fake upstream that streams :func:`_upstream_stream`."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/models", _models),
            Route("/health", _models),
        ]
    )
    with serve(app) as upstream_url:
        options: dict[str, Any] = {"base_url": f"{upstream_url}/v1", "upstream_model": "up"}

        def loader() -> UpstreamEngine:
            return load(None, model_name="public", device="cpu", options=options)

        with serve(create_app(loader, model_name="public", engine_kind="upstream")) as url:
            yield url


def test_every_event_is_relayed_whole(proxy_url: str) -> None:
    body = {"model": "public", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{proxy_url}/v1/chat/completions", json=body) as resp:
        relayed = b"".join(resp.iter_bytes()).decode()
    events = relayed.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") and "\n" not in e for e in events[:-2])
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == CONTENT
    assert {c["model"] for c in chunks} == {"public"}


def test_the_openai_client_reads_the_relayed_stream(proxy_url: str) -> None:
    with openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="x", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model="public",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert [c.choices[0].delta.content for c in chunks if c.choices] == CONTENT
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.total_tokens == 7
